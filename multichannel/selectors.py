"""Read paths of the shared core."""

from django.db.models import QuerySet

from multichannel.models import Conversation, EndUser, Turn, UserMessage


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
    """The user's messages on both channels, in the order they are answered."""
    return (
        UserMessage.objects.filter(end_user=end_user)
        .select_related("turn")
        .order_by("sent_at", "id")
    )
