"""Read paths of the shared core.

The reads of every signed-in web request's hot path (who is signed in; whose response
this is) and of the worker's loop (the user's next unfinished message) are plain
statements: building them with the ORM cost several times the statement itself
(docs/benchmarks.md). Table and column names come from the models; the values are
parameters."""

from django.db import connection
from django.db.models import QuerySet

from audit.toolkit import columns, db_names, one_row
from multichannel.models import Conversation, EndUser, Media, Turn, UserMessage

_ENDUSER, _ID, _ERASED = db_names(EndUser, "id", "erased_at")
_ACTIVE_END_USER = f"SELECT {_ID} FROM {_ENDUSER} WHERE {_ID} = %s AND {_ERASED} IS NULL"  # noqa: S608
_TURN, _RESPONSE, _OWNER, _IN = db_names(Turn, "response_id", "end_user", "conversation")
_CONVERSATION, _CONVERSATION_ID, _MKA1_ID, _HOLDER = db_names(
    Conversation, "id", "mka1_conversation_id", "end_user"
)
_CONVERSATION_OF_RESPONSE = (
    f"SELECT c.{_MKA1_ID} FROM {_TURN} t JOIN {_CONVERSATION} c ON c.{_CONVERSATION_ID} = t.{_IN} "  # noqa: S608
    f"WHERE t.{_RESPONSE} = %s AND t.{_OWNER} = %s"
)

_MESSAGE, _SENDER, _STATE, _SENT, _MESSAGE_ID = db_names(
    UserMessage, "end_user", "state", "sent_at", "id"
)
UNFINISHED = (UserMessage.State.QUEUED, UserMessage.State.ANSWERED)
_ANY_UNFINISHED = f"SELECT 1 FROM {_MESSAGE} WHERE {_SENDER} = %s AND {_STATE} IN (%s, %s) LIMIT 1"  # noqa: S608


def end_user_active(end_user_id: str) -> EndUser | None:
    """The end user with this id, unless their erasure has begun (from then on nothing
    of theirs is shown). Only the id is read; other fields load if asked for."""
    row = one_row(_ACTIVE_END_USER, [end_user_id])
    if row is None:
        return None
    return EndUser.from_db(connection.alias, ["id", "erased_at"], (row[0], None))


def conversation_of_response(*, end_user: EndUser, response_id: str) -> str | None:
    """The MKA1 conversation id of the turn that created this response, if that turn
    belongs to this end user."""
    row = one_row(_CONVERSATION_OF_RESPONSE, [response_id, end_user.pk])
    return None if row is None else str(row[0])


def conversation_of_end_user(*, end_user: EndUser) -> Conversation | None:
    """The end user's conversation (each has at most one), with the end user on it."""
    conversation_columns = columns(Conversation, "c", connection)
    row = one_row(
        f"SELECT {conversation_columns.sql} FROM {_CONVERSATION} c WHERE c.{_HOLDER} = %s",  # noqa: S608
        [end_user.pk],
    )
    if row is None:
        return None
    conversation: Conversation = conversation_columns.instance(row, connection)
    Conversation.end_user.field.set_cached_value(conversation, end_user)
    return conversation


def messages_of_end_user(*, end_user: EndUser) -> QuerySet[UserMessage]:
    """The user's messages on both channels, in the order they are answered (ratings of
    replies are shown on the reply they rate, not as messages)."""
    return (
        UserMessage.objects.filter(end_user=end_user)
        .exclude(kind=UserMessage.Kind.FEEDBACK)
        .select_related("turn", "media")
        .order_by("sent_at", "id")
    )


def media_of_end_user(*, end_user: EndUser, media_id: int) -> Media | None:
    """A file this user sent; None for anyone else's."""
    return (
        Media.objects.select_related("message")
        .filter(pk=media_id, message__end_user=end_user)
        .first()
    )


def message_next_unfinished(end_user_id: str) -> UserMessage | None:
    """The user's oldest message not yet delivered (or failed), with the end user
    loaded on it: the worker's next step."""
    message_columns = columns(UserMessage, "m", connection)
    user_columns = columns(EndUser, "u", connection)
    sql = (
        f"SELECT {message_columns.sql}, {user_columns.sql} FROM {_MESSAGE} m "  # noqa: S608
        f"JOIN {_ENDUSER} u ON u.{_ID} = m.{_SENDER} "
        f"WHERE m.{_SENDER} = %s AND m.{_STATE} IN (%s, %s) "
        f"ORDER BY m.{_SENT}, m.{_MESSAGE_ID} LIMIT 1"
    )
    row = one_row(sql, [end_user_id, *UNFINISHED])
    if row is None:
        return None
    message: UserMessage = message_columns.instance(row, connection)
    end_user = user_columns.instance(row, connection, start=message_columns.width)
    UserMessage.end_user.field.set_cached_value(message, end_user)
    return message


def messages_unfinished_exist(end_user_id: str) -> bool:
    return one_row(_ANY_UNFINISHED, [end_user_id, *UNFINISHED]) is not None
