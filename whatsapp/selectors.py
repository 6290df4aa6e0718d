"""Reads the WhatsApp side of the worker shares."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Max, Min, Prefetch, prefetch_related_objects

from multichannel.models import UserMessage
from whatsapp.models import InboundMessage, WebhookDelivery


def inbound_of(message: UserMessage) -> InboundMessage:
    """The WhatsApp message behind `message`, with its sender: read once per message
    object (the opt-out check, the typing indicator, the erasure words and the delivery
    of one step share it) and kept on it, as Django keeps a related object."""
    prefetch_related_objects(
        [message],
        Prefetch("whatsapp_inbound", queryset=InboundMessage.objects.select_related("identity")),
    )
    inbound: InboundMessage = message.whatsapp_inbound
    return inbound


@dataclass(frozen=True)
class Waiting:
    """Webhook deliveries kept but not fanned out yet: how many, when the oldest was
    received and the newest's id (a fan-out of it fans out every older one too)."""

    count: int
    oldest_received_at: datetime | None
    newest_id: int | None


def deliveries_waiting(*, received_before: datetime | None = None) -> Waiting:
    """One read of the deliveries still waiting (received before a moment, if given)."""
    waiting = WebhookDelivery.objects.filter(processed_at__isnull=True)
    if received_before is not None:
        waiting = waiting.filter(received_at__lt=received_before)
    row = waiting.aggregate(count=Count("pk"), oldest=Min("received_at"), newest=Max("pk"))
    return Waiting(row["count"], row["oldest"], row["newest"])
