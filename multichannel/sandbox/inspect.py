"""Read-only views into what the MKA1 stand-in still holds, for tests of erasure: what
an API call can no longer reach may still be in the tables (items of a deleted
conversation), and those count."""

from multichannel.mka1 import api_key_fingerprint
from multichannel.sandbox.models import (
    SandboxConversation,
    SandboxFeedback,
    SandboxFile,
    SandboxItem,
    SandboxResponse,
    SandboxTranscription,
)


def held_for(user_id: str, *, api_key: str | None = None) -> dict[str, int]:
    """What MKA1 holds for this `X-On-Behalf-Of` user (under `api_key`, else under any
    key): stored responses, live conversations, conversation items (those stranded in
    deleted conversations included), uploaded files and transcriptions."""
    owner = {"owner_user": user_id}
    if api_key is not None:
        owner["owner_key"] = api_key_fingerprint(api_key)
    conversations = SandboxConversation.objects.filter(**owner)
    items_owner = {f"conversation__{name}": value for name, value in owner.items()}
    return {
        "responses": SandboxResponse.objects.filter(**owner).count(),
        "conversations": conversations.filter(deleted_at__isnull=True).count(),
        "items": SandboxItem.objects.filter(**items_owner).count(),
        "files": SandboxFile.objects.filter(**owner).count(),
        "transcriptions": SandboxTranscription.objects.filter(**owner).count(),
    }


def feedback_for(response_id: str) -> list[SandboxFeedback]:
    """The feedback received for one response, oldest first."""
    return list(SandboxFeedback.objects.filter(response_id=response_id).order_by("id"))
