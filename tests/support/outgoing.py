"""What the app sent out: MKA1 calls recorded at the client's seam, and the replies the
Graph API stand-in received."""

from typing import Any

Calls = list[tuple[str, str, dict[str, Any]]]


def response_creates(calls: Calls) -> list[dict[str, Any]]:
    """The bodies of the `responses.create` calls, in the order made."""
    return [body for method, path, body in calls if (method, path) == ("POST", "/responses")]


def sent_texts(recipient: str | None = None) -> list[str]:
    """Reply texts the Graph API stand-in received, oldest first."""
    from multichannel.sandbox.models import SandboxGraphMessage

    sent = SandboxGraphMessage.objects.filter(kind="text")
    if recipient is not None:
        sent = sent.filter(recipient=recipient)
    return [message.body["text"]["body"] for message in sent]
