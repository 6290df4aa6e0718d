"""Read paths of the shared core."""

from django.db.models import QuerySet

from multichannel.models import Conversation, EndUser, Media, Turn, UserMessage


def turn_of_end_user(*, end_user: EndUser, response_id: str) -> Turn | None:
    """The turn that created this response, if it belongs to this end user."""
    return (
        Turn.objects.select_related("conversation")
        .filter(response_id=response_id, end_user=end_user)
        .first()
    )


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
