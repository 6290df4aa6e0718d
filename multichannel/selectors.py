"""Read paths of the shared core.

The two reads of every signed-in web request's hot path (who is signed in; whose
response this is) are plain statements: building them with the ORM cost several times
the statement itself (docs/benchmarks.md). Table and column names come from the models;
the values are parameters."""

from typing import Any

from django.db import connection
from django.db.models import QuerySet

from multichannel.models import Conversation, EndUser, Media, Turn, UserMessage


def _one(sql: str, params: list[Any]) -> tuple[Any, ...] | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row: tuple[Any, ...] | None = cursor.fetchone()
    return row


def _names(model: Any, *fields: str) -> list[str]:
    meta = model._meta
    return [meta.db_table, *(meta.get_field(name).column for name in fields)]


_ENDUSER, _ID, _ERASED = _names(EndUser, "id", "erased_at")
_ACTIVE_END_USER = f"SELECT {_ID} FROM {_ENDUSER} WHERE {_ID} = %s AND {_ERASED} IS NULL"  # noqa: S608
_TURN, _RESPONSE, _OWNER, _IN = _names(Turn, "response_id", "end_user", "conversation")
_CONVERSATION, _CONVERSATION_ID, _MKA1_ID = _names(Conversation, "id", "mka1_conversation_id")
_CONVERSATION_OF_RESPONSE = (
    f"SELECT c.{_MKA1_ID} FROM {_TURN} t JOIN {_CONVERSATION} c ON c.{_CONVERSATION_ID} = t.{_IN} "  # noqa: S608
    f"WHERE t.{_RESPONSE} = %s AND t.{_OWNER} = %s"
)


def end_user_active(end_user_id: str) -> EndUser | None:
    """The end user with this id, unless their erasure has begun (from then on nothing
    of theirs is shown). Only the id is read; other fields load if asked for."""
    row = _one(_ACTIVE_END_USER, [end_user_id])
    if row is None:
        return None
    return EndUser.from_db(connection.alias, ["id", "erased_at"], (row[0], None))


def conversation_of_response(*, end_user: EndUser, response_id: str) -> str | None:
    """The MKA1 conversation id of the turn that created this response, if that turn
    belongs to this end user."""
    row = _one(_CONVERSATION_OF_RESPONSE, [response_id, end_user.pk])
    return None if row is None else str(row[0])


def conversation_of_end_user(*, end_user: EndUser) -> Conversation | None:
    return Conversation.objects.filter(end_user=end_user).first()


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
