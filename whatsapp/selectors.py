"""Reads the WhatsApp side of the worker shares."""

from django.db.models import Prefetch, prefetch_related_objects

from multichannel.models import UserMessage
from whatsapp.models import InboundMessage


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
