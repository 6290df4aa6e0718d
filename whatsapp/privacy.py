"""What WhatsApp contributes to erasure and retention (multichannel.privacy): the
person's own request (DELETE MY DATA, then YES within ERASURE_CONFIRM_SECONDS), the
final confirmation, and forgetting what WhatsApp sent us about them, down to their
number: only a keyed hash of it is kept."""

import logging
from collections.abc import Collection
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils.crypto import salted_hmac

from multichannel.models import EndUser, UserMessage
from multichannel.privacy import UnderLegalHoldError, erasure_request
from multichannel.tasks import erasure_continue_on_commit
from whatsapp.graph import GraphError, graph_client
from whatsapp.models import InboundMessage, OutboundMessage, WebhookDelivery, WhatsAppIdentity
from whatsapp.selectors import inbound_of

logger = logging.getLogger(__name__)

# The person asks for erasure (WHATSAPP_ERASE_KEYWORD), then confirms it.
ERASE = "erase"
ERASE_CONFIRM = "erase.confirm"
_HASH_SALT = "multichannel.whatsapp.erased-id"


def erased_id_hash(value: str, secret: str | None = None) -> str:
    """The keyed hash an erased identity keeps of its number (or business-scoped id):
    a repeat request can be matched, but the number cannot be read back from it."""
    return salted_hmac(_HASH_SALT, value, secret=secret, algorithm="sha256").hexdigest()


def erased_identities(value: str) -> list[WhatsAppIdentity]:
    """Identities erased for this number or business-scoped id (under the current
    SECRET_KEY or any of SECRET_KEY_FALLBACKS)."""
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    hashes = {erased_id_hash(value, secret) for secret in secrets}
    return list(WhatsAppIdentity.objects.filter(erased_hash__in=hashes).order_by("pk"))


def _identity(message: UserMessage) -> WhatsAppIdentity:
    return inbound_of(message).identity


# --- the person's request ---------------------------------------------------------------


def asks_to_erase(text: str) -> bool:
    return " ".join(text.split()).casefold() == settings.WHATSAPP_ERASE_KEYWORD.casefold()


def erase_ask_reply(message: UserMessage) -> str:
    """DELETE MY DATA: remember when, and ask for confirmation."""
    WhatsAppIdentity.objects.filter(pk=_identity(message).pk).update(
        erasure_asked_at=message.sent_at
    )
    return settings.WHATSAPP_ERASE_ASK_REPLY


def confirms_erasure(message: UserMessage) -> bool:
    """YES within ERASURE_CONFIRM_SECONDS of DELETE MY DATA (by WhatsApp's clock); any
    other time it is an ordinary message."""
    if message.text.strip().casefold() != settings.WHATSAPP_ERASE_CONFIRM_KEYWORD.casefold():
        return False
    if message.channel != "whatsapp":
        return False
    asked = _identity(message).erasure_asked_at
    if asked is None:
        return False
    window = timedelta(seconds=settings.ERASURE_CONFIRM_SECONDS)
    return asked <= message.sent_at <= asked + window


def erase_confirm_reply(message: UserMessage) -> str:
    """YES: the erasure starts (queued); its last step sends the confirmation, the only
    message after it. Under a legal hold the person is told it cannot be done now."""
    identity = _identity(message)
    with transaction.atomic():
        WhatsAppIdentity.objects.filter(pk=identity.pk).update(erasure_asked_at=None)
        try:
            erasure = erasure_request(
                end_user=message.end_user,
                reason="the person asked on WhatsApp (DELETE MY DATA, confirmed with YES)",
                requested_by="the person, on WhatsApp",
                notify_channel="whatsapp",
            )
        except UnderLegalHoldError as exc:
            logger.warning("erasure asked on WhatsApp refused: %s", exc)
            return settings.WHATSAPP_ERASE_HELD_REPLY
        erasure_continue_on_commit(erasure.pk)
    return ""


# --- the erasure's steps ----------------------------------------------------------------


def whatsapp_forget(end_user: EndUser) -> dict[str, int]:
    """Delete what WhatsApp told us about this person and what we sent them: their
    inbound messages (raw payloads), our sent replies, and the webhook bodies that
    carried their messages or their number (a body shared with others is blanked)."""
    identities = list(WhatsAppIdentity.objects.filter(end_user=end_user))
    ids = [value for identity in identities for value in (identity.wa_id, identity.bsuid) if value]
    inbound = InboundMessage.objects.filter(user_message__end_user=end_user)
    delivery_ids = set(inbound.values_list("delivery_id", flat=True))
    mentions = Q()
    for value in ids:
        mentions |= Q(raw_body__contains=value)
    if ids:
        # Status updates name the recipient's number too.
        delivery_ids |= set(WebhookDelivery.objects.filter(mentions).values_list("pk", flat=True))
    sent = OutboundMessage.objects.filter(user_message__end_user=end_user).delete()[0]
    received = inbound.delete()[0]
    blanked = (
        WebhookDelivery.objects.filter(pk__in=delivery_ids).exclude(raw_body="").update(raw_body="")
    )
    return {"inbound": received, "outbound": sent, "webhook_bodies": blanked}


def whatsapp_notify_erased(end_user: EndUser) -> bool:
    """The final confirmation (WHATSAPP_ERASE_DONE_REPLY), sent straight to the number
    and kept nowhere."""
    identity = WhatsAppIdentity.objects.filter(end_user=end_user).first()
    if identity is None or not (identity.wa_id or identity.bsuid):
        return False
    to = identity.wa_id
    try:
        graph_client().send_text(
            text=settings.WHATSAPP_ERASE_DONE_REPLY,
            to=to,
            recipient=None if to else identity.bsuid,
        )
    except GraphError as exc:
        if exc.transient:
            raise
        logger.warning("erasure confirmation for %s not sent: %s", end_user.pk, exc)
        return False
    return True


def whatsapp_pseudonymise(end_user: EndUser) -> int:
    """Keep only a keyed hash of the number (or the business-scoped id): a returning
    number is a new end user, and a repeat request is still recognised."""
    hashed = 0
    with transaction.atomic():
        for identity in WhatsAppIdentity.objects.select_for_update().filter(end_user=end_user):
            value = identity.wa_id or identity.bsuid
            if value is None:
                continue
            identity.erased_hash = erased_id_hash(value)
            identity.wa_id = identity.bsuid = None
            identity.erasure_asked_at = None
            identity.save(
                update_fields=["erased_hash", "wa_id", "bsuid", "erasure_asked_at", "updated_at"]
            )
            hashed += 1
    return hashed


def whatsapp_retain(cutoff: datetime, held: Collection[str]) -> dict[str, int]:
    """Retention: raw payloads and sent texts older than the cutoff, except of people
    under a legal hold."""
    inbound = (
        InboundMessage.objects.filter(sent_at__lt=cutoff)
        .exclude(user_message__end_user_id__in=held)
        .exclude(raw={})
        .update(raw={})
    )
    outbound = (
        OutboundMessage.objects.filter(created_at__lt=cutoff)
        .exclude(user_message__end_user_id__in=held)
        .exclude(text="")
        .update(text="")
    )
    held_deliveries = InboundMessage.objects.filter(user_message__end_user_id__in=held).values_list(
        "delivery_id", flat=True
    )
    bodies = (
        WebhookDelivery.objects.filter(received_at__lt=cutoff)
        .exclude(pk__in=held_deliveries)
        .exclude(raw_body="")
        .update(raw_body="")
    )
    return {"inbound": inbound, "outbound": outbound, "webhook_bodies": bodies}


def whatsapp_lookup(address: str) -> tuple[list[EndUser], list[EndUser]]:
    """The end users a WhatsApp number (+15551234567, spaces and dashes allowed) or a
    business-scoped id names: (live, erased)."""
    value = address.strip()
    digits = "".join(ch for ch in value if ch.isdigit())
    if value.lstrip("+").replace(" ", "").replace("-", "").isdigit():
        value = digits  # a number, as WhatsApp writes wa_id: digits only
    live = [
        identity.end_user
        for identity in WhatsAppIdentity.objects.select_related("end_user").filter(
            Q(wa_id=value) | Q(bsuid=value)
        )
    ]
    erased = [identity.end_user for identity in erased_identities(value)]
    return live, erased
