import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from multichannel.models import Channel, EndUser, UserMessage
from multichannel.tasks import process_end_user_on_commit
from whatsapp.models import InboundMessage, OutboundMessage, WebhookDelivery, WhatsAppIdentity
from whatsapp.payload import IncomingMessage, StatusUpdate, parse_webhook

logger = logging.getLogger(__name__)


def identity_resolve(*, wa_id: str | None, bsuid: str | None) -> WhatsAppIdentity:
    """The identity for a sender, created with a new EndUser on first contact.

    A sender is matched by either id; when a message brings an id we did not know yet
    for a known sender (a BSUID next to a known phone number, say), it is added.
    """
    if not wa_id and not bsuid:
        raise ValueError("a WhatsApp sender needs a wa_id or a business-scoped user id")
    match = Q()
    if wa_id:
        match |= Q(wa_id=wa_id)
    if bsuid:
        match |= Q(bsuid=bsuid)
    with transaction.atomic():
        identity = WhatsAppIdentity.objects.select_for_update().filter(match).first()
        if identity is None:
            try:
                with transaction.atomic():
                    return WhatsAppIdentity.objects.create(
                        end_user=EndUser.objects.create(),
                        wa_id=wa_id or None,
                        bsuid=bsuid or None,
                    )
            except IntegrityError:
                # A concurrent delivery created the same sender first.
                identity = WhatsAppIdentity.objects.select_for_update().get(match)
        changed = []
        if wa_id and identity.wa_id is None:
            identity.wa_id = wa_id
            changed.append("wa_id")
        if bsuid and identity.bsuid is None:
            identity.bsuid = bsuid
            changed.append("bsuid")
        if changed:
            identity.save(update_fields=[*changed, "updated_at"])
    return identity


STATUS_RANK = {
    OutboundMessage.Status.ACCEPTED: 0,
    OutboundMessage.Status.SENT: 1,
    OutboundMessage.Status.DELIVERED: 2,
    OutboundMessage.Status.READ: 3,
    OutboundMessage.Status.FAILED: 4,
}


def signature_valid(*, body: bytes, header: str, app_secret: str) -> bool:
    """Meta signs the raw body: `sha256=` + hex HMAC-SHA256 with the app secret."""
    if not header.startswith("sha256=") or not app_secret:
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header[len("sha256=") :].strip().lower())


@dataclass(frozen=True)
class WebhookResult:
    delivery_id: int
    stored: int
    duplicates: int
    statuses_applied: int


def webhook_receive(*, raw_body: bytes, payload: dict[str, Any]) -> WebhookResult:
    """Store a verified webhook: the raw body, every new message (once per WhatsApp
    message id) and every status update, in one transaction; queue the answers after
    commit."""
    now = timezone.now()
    parsed = parse_webhook(payload, received_at=now)
    stored = duplicates = applied = 0
    users: set[str] = set()
    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(
            object=parsed.object[:64],
            raw_body=raw_body.decode("utf-8", errors="replace"),
            message_count=len(parsed.messages),
            status_count=len(parsed.statuses),
        )
        for message in parsed.messages:
            end_user_id = inbound_message_store(delivery=delivery, message=message)
            if end_user_id is None:
                duplicates += 1
            else:
                stored += 1
                users.add(end_user_id)
        for status in parsed.statuses:
            applied += status_apply(status)
    for end_user_id in sorted(users):
        process_end_user_on_commit(end_user_id)
    return WebhookResult(delivery.pk, stored, duplicates, applied)


def message_kind(message: IncomingMessage) -> str:
    text = message.text.strip()
    if message.type != "text" or not text:
        return UserMessage.Kind.UNSUPPORTED
    if text.casefold() == settings.LOGIN_KEYWORD.casefold():
        return UserMessage.Kind.LOGIN  # answered with a sign-in link, never sent to MKA1
    return UserMessage.Kind.TEXT


def inbound_message_store(*, delivery: WebhookDelivery, message: IncomingMessage) -> str | None:
    """Store one message and return its end user's id; None when this WhatsApp message
    id is already stored (a redelivery)."""
    if InboundMessage.objects.filter(wamid=message.wamid).exists():
        return None
    try:
        with transaction.atomic():
            identity = identity_resolve(wa_id=message.wa_id, bsuid=message.bsuid)
            user_message = UserMessage.objects.create(
                end_user_id=identity.end_user_id,
                channel=Channel.WHATSAPP,
                kind=message_kind(message),
                external_id=message.wamid,
                text=message.text.strip(),
                sent_at=message.sent_at,
            )
            InboundMessage.objects.create(
                wamid=message.wamid,
                delivery=delivery,
                identity=identity,
                user_message=user_message,
                type=message.type[:32],
                phone_number_id=message.phone_number_id,
                sent_at=message.sent_at,
                raw=message.raw,
            )
    except IntegrityError:
        # The same message id arrived in a concurrent delivery that committed first.
        return None
    return identity.end_user_id


def status_apply(status: StatusUpdate) -> int:
    """Apply a delivery status to our outbound message; 1 if it changed anything.
    Statuses are redelivered and may arrive out of order: only forward moves count."""
    outbound = OutboundMessage.objects.select_for_update().filter(wamid=status.wamid).first()
    if outbound is None:
        logger.info("status %s for unknown message %s", status.status, status.wamid)
        return 0
    if (
        STATUS_RANK[OutboundMessage.Status(status.status)]
        <= STATUS_RANK[OutboundMessage.Status(outbound.status)]
    ):
        return 0
    outbound.status = status.status
    outbound.status_at = status.at
    if status.errors:
        outbound.errors = status.errors
    outbound.save(update_fields=["status", "status_at", "errors", "updated_at"])
    return 1
