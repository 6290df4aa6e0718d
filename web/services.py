"""Write paths of the web channel: sign-in links, retrievals, messages from the page."""

import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_event_record
from multichannel.mka1 import Mka1Error, Mka1Object, client, is_response_id
from multichannel.models import Channel, EndUser, UserMessage
from multichannel.selectors import conversation_of_end_user, conversation_of_response
from multichannel.services import mka1_failure_record, response_conversation_id
from multichannel.tasks import process_end_user_on_commit
from web.models import SignInLink, token_hash

# The kind of a message that asks for a sign-in link (typed on WhatsApp, answered here).
LOGIN = "login"
LINK_PLACEHOLDER = "{sign_in_link}"
MESSAGE_MAX_CHARS = 4096


class NotFoundError(Exception):
    """Unknown, or not this user's: answered the same either way, so ids cannot be
    probed."""


LINK_KEPT = "[one-time sign-in link]"


def asks_for_sign_in(text: str) -> bool:
    return text.strip().casefold() == settings.LOGIN_KEYWORD.casefold()


def sign_in_reply(message: UserMessage) -> str:
    """What is stored as the reply to LOGIN: the link itself is only filled in when the
    reply is sent (see `sign_in_link_expand`), so no usable token is ever stored. A
    LOGIN soon after the last link gets no new one: one number cannot mint links."""
    since = timezone.now() - timedelta(seconds=settings.SIGNIN_LINK_INTERVAL_SECONDS)
    recent = (
        SignInLink.objects.filter(end_user_id=message.end_user_id, created_at__gt=since)
        .order_by("-created_at")
        .first()
    )
    if recent is not None:
        wait = recent.created_at + timedelta(seconds=settings.SIGNIN_LINK_INTERVAL_SECONDS)
        minutes = max(1, -(-int((wait - timezone.now()).total_seconds()) // 60))
        return (
            "A sign-in link was sent a moment ago; use that one. "
            f"You can ask for a new link in {minutes} minute{'s' if minutes != 1 else ''}."
        )
    return (
        f"Open this link to continue on the web: {LINK_PLACEHOLDER}\n"
        f"It works once and expires in {settings.SIGNIN_LINK_MINUTES} minutes."
    )


def sign_in_link_issue(*, end_user: EndUser, requested_by: str = "") -> tuple[SignInLink, str]:
    """A new one-time link for this end user; returns the row and the URL to send."""
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        # A new link replaces every unused one: at most one live link per person.
        SignInLink.objects.filter(
            end_user=end_user, used_at__isnull=True, expires_at__gt=timezone.now()
        ).update(expires_at=timezone.now())
        link = SignInLink.objects.create(
            token_hash=token_hash(token),
            end_user=end_user,
            expires_at=timezone.now() + timedelta(minutes=settings.SIGNIN_LINK_MINUTES),
            requested_by=requested_by,
        )
        audit_event_record(
            channel=Channel.WHATSAPP,
            action=AuditAction.SIGNIN_LINK_ISSUED,
            end_user_id=end_user.pk,
            context={
                "link_id": link.pk,
                "expires_at": link.expires_at.isoformat(),
                "whatsapp_message_id": requested_by,
            },
        )
    return link, f"{settings.SITE_URL}/signin/{token}"


def sign_in_link_expand(message: UserMessage) -> str:
    """The reply to send, with a freshly issued link in place of the placeholder."""
    if LINK_PLACEHOLDER not in message.reply_text:
        return message.reply_text  # no link was promised (e.g. one was sent moments ago)
    _, url = sign_in_link_issue(end_user=message.end_user, requested_by=message.external_id)
    return message.reply_text.replace(LINK_PLACEHOLDER, url)


def sign_in_reply_kept(message: UserMessage) -> str:
    """The reply as our records keep it: the link is never stored."""
    return message.reply_text.replace(LINK_PLACEHOLDER, LINK_KEPT)


def reply_for_display(message: UserMessage) -> str:
    return message.reply_text.replace(LINK_PLACEHOLDER, "(a one-time link, sent on WhatsApp)")


def sign_in_link_redeem(*, token: str) -> EndUser | None:
    """The end user the link signs in, marking it used; None if it is unknown, used or
    expired. Two clicks racing each other: exactly one wins."""
    now = timezone.now()
    with transaction.atomic():
        link = SignInLink.objects.filter(token_hash=token_hash(token)).first()
        if link is None:
            return None
        claimed = SignInLink.objects.filter(
            pk=link.pk, used_at__isnull=True, expires_at__gt=now, end_user__erased_at__isnull=True
        ).update(used_at=now)
        if not claimed:
            return None
        audit_event_record(
            channel=Channel.WEBAPP,
            action=AuditAction.SIGNIN_LINK_USED,
            end_user_id=link.end_user_id,
            context={"link_id": link.pk},
        )
    return link.end_user


def _audited_read(
    call: Callable[[], Mka1Object], *, operation: str, end_user: EndUser, **ids: Any
) -> Mka1Object:
    """An MKA1 read on the user's behalf; a failure is audited (bounded: the user can
    repeat it at will) and raised."""
    try:
        return call()
    except Mka1Error as exc:
        mka1_failure_record(
            channel=Channel.WEBAPP,
            operation=operation,
            end_user_id=end_user.pk,
            exc=exc,
            bounded=True,
            **ids,
        )
        raise


def response_retrieve(*, end_user: EndUser, response_id: str) -> Mka1Object:
    """The stored MKA1 response, fetched again with the same key and end user id, and
    the retrieval audited (the seed guide's channel-two evidence point)."""
    if not is_response_id(response_id):
        raise ValueError("response id must match ^resp[-_][a-zA-Z0-9]+$")
    conversation_id = conversation_of_response(end_user=end_user, response_id=response_id)
    if conversation_id is None:
        raise NotFoundError(response_id)
    mka1 = client()
    response = _audited_read(
        lambda: mka1.get_response(end_user.pk, response_id),
        operation="responses.get",
        end_user=end_user,
        response_id=response_id,
        conversation_id=conversation_id,
    )
    audit_event_record(
        channel=Channel.WEBAPP,
        action=AuditAction.RESPONSES_GET,
        end_user_id=end_user.pk,
        response_id=response.id or response_id,
        conversation_id=response_conversation_id(response.data) or conversation_id,
        previous_response_id=response.data.get("previous_response_id"),
        full_response=response,
        api_key_fingerprint=mka1.key_fingerprint,
    )
    return response


def conversation_item_retrieve(*, end_user: EndUser, item_id: str) -> tuple[str, Mka1Object]:
    conversation = conversation_of_end_user(end_user=end_user)
    if conversation is None:
        raise NotFoundError(item_id)
    mka1 = client()
    item = _audited_read(
        lambda: mka1.get_conversation_item(end_user.pk, conversation.mka1_conversation_id, item_id),
        operation="conversations.items.get",
        end_user=end_user,
        conversation_id=conversation.mka1_conversation_id,
        context={"item_id": item_id},
    )
    response_id: Any = item.data.get("response_id")
    audit_event_record(
        channel=Channel.WEBAPP,
        action=AuditAction.CONVERSATIONS_ITEMS_GET,
        end_user_id=end_user.pk,
        response_id=response_id if isinstance(response_id, str) else None,
        conversation_id=conversation.mka1_conversation_id,
        full_response=item,
        api_key_fingerprint=mka1.key_fingerprint,
    )
    return conversation.mka1_conversation_id, item


def web_message_send(*, end_user: EndUser, text: str) -> UserMessage:
    """A message typed on the page: queued on the same per-user path as WhatsApp."""
    text = text.strip()
    if not text:
        raise ValueError("message is empty")
    if len(text) > MESSAGE_MAX_CHARS:
        raise ValueError(f"message is longer than {MESSAGE_MAX_CHARS} characters")
    with transaction.atomic():
        message = UserMessage.objects.create(
            end_user=end_user,
            channel=Channel.WEBAPP,
            kind=UserMessage.Kind.TEXT,
            text=text,
            sent_at=timezone.now(),
        )
        process_end_user_on_commit(end_user.pk)
    return message
