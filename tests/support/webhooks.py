"""A signed WhatsApp webhook, the way Meta posts it: through Django's test client in this
process, or over HTTP to a running server."""

import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

import requests

from multichannel.sandbox import whatsapp as wa

if TYPE_CHECKING:
    from django.test import Client

    from multichannel.models import UserMessage

WEBHOOK = "/whatsapp/webhook"
PostWebhook = Callable[..., Any]


class Signature(Enum):
    APP_SECRET = "X-Hub-Signature-256 of the body with settings.WHATSAPP_APP_SECRET"


@dataclass(frozen=True)
class Message:
    """One text from one sender; `timestamp` orders a sender's messages. `media`: the
    webhook event of a file sent instead (a voice note saying `text`, say)."""

    wa_id: str
    text: str
    wamid: str
    timestamp: int
    media: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    def event(self) -> dict[str, Any]:
        if self.media is not None:
            return self.media
        return wa.message_event(
            wa_id=self.wa_id, text=self.text, message_id=self.wamid, timestamp=self.timestamp
        )


def conversation(name: str, *, users: int, per_user: int) -> list[Message]:
    """`per_user` messages from each of `users` senders, a second apart per sender, in
    the order Meta would send them (everyone's first, then everyone's second, ...)."""
    start = int(time.time()) - per_user
    return [
        Message(
            wa_id=f"1555{user:07d}",
            text=f"{name} u{user} m{n}",
            wamid=f"wamid.{name}.{user}.{n}",
            timestamp=start + n,
        )
        for n in range(per_user)
        for user in range(users)
    ]


def webhook_body(messages: Iterable[Message]) -> bytes:
    """One webhook carrying these messages."""
    return wa.encode(wa.webhook_payload([message.event() for message in messages]))


def webhook_post(
    body: bytes,
    *,
    client: "Client | None" = None,
    signature: str | Literal[Signature.APP_SECRET] | None = Signature.APP_SECRET,
) -> Any:
    """POST a body to the webhook through Django's test client (a new one unless given).
    `signature` is the X-Hub-Signature-256 value to send, None for no header at all."""
    from django.conf import settings
    from django.test import Client

    if signature is Signature.APP_SECRET:
        signature = wa.sign(body, settings.WHATSAPP_APP_SECRET)
    headers = {} if signature is None else {"X-Hub-Signature-256": signature}
    return (client or Client()).post(
        WEBHOOK, data=body, content_type="application/json", headers=headers
    )


def webhook_deliver(body: bytes) -> int:
    """POST a body signed with the app secret from a new test client; the status code."""
    return int(webhook_post(body).status_code)


def webhook_send(
    base_url: str,
    body: bytes,
    *,
    secret: str,
    session: requests.Session | None = None,
    timeout: float = 10,
) -> requests.Response:
    """POST a body, signed with `secret`, to the webhook of the server at `base_url`."""
    post = session.post if session is not None else requests.post
    headers = wa.webhook_headers(body, secret)
    return post(f"{base_url}{WEBHOOK}", data=body, headers=headers, timeout=timeout)


def whatsapp_say(
    text: str,
    *,
    on_commit: Callable[..., AbstractContextManager[Any]],
    client: "Client | None" = None,
    wa_id: str = "15551234567",
    run: bool = True,
) -> "UserMessage":
    """A user sends a WhatsApp text; the work queued on commit runs (Huey immediate mode)
    unless `run` is off. `on_commit` is pytest-django's django_capture_on_commit_callbacks.
    Returns the stored UserMessage."""
    from multichannel.models import UserMessage

    event = wa.message_event(wa_id=wa_id, text=text)
    with on_commit(execute=run):
        assert (
            webhook_post(wa.encode(wa.webhook_payload([event])), client=client).status_code == 200
        )
    return UserMessage.objects.get(external_id=event["message"]["id"])
