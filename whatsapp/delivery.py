"""Delivering a stored reply over WhatsApp: mark the user's message read, then send the
reply in parts of at most 4096 characters. A part already accepted by the Graph API is
never sent again, so a retry after a crash or a transient failure resumes where it was."""

import logging
from functools import partial

from multichannel.channels import (
    DeliveryPermanentError,
    DeliveryTransientError,
    reply_for_delivery,
)
from multichannel.durability import stored_despite_outage
from multichannel.models import UserMessage
from whatsapp.graph import GraphError, graph_client, split_message
from whatsapp.models import InboundMessage, OutboundMessage

logger = logging.getLogger(__name__)


def whatsapp_deliver(message: UserMessage) -> None:
    inbound = InboundMessage.objects.select_related("identity").get(user_message=message)
    graph = graph_client()
    if not inbound.read_marked:
        try:
            graph.mark_read(inbound.wamid)
        except GraphError as exc:
            logger.info("could not mark %s read: %s", inbound.wamid, exc)  # cosmetic only
        else:
            inbound.read_marked = True
            inbound.save(update_fields=["read_marked"])
    identity = inbound.identity
    to = identity.wa_id
    recipient = None if to else identity.bsuid
    address = to or recipient or ""
    text_to_send, text_to_keep = reply_for_delivery(message)
    kept_parts = split_message(text_to_keep)
    for part, text in enumerate(split_message(text_to_send)):
        kept = kept_parts[part] if part < len(kept_parts) else ""
        if OutboundMessage.objects.filter(
            user_message=message, part=part, wamid__isnull=False
        ).exists():
            continue
        try:
            wamid = graph.send_text(text=text, to=to, recipient=recipient)
        except GraphError as exc:
            if exc.transient:
                raise DeliveryTransientError(str(exc)) from exc
            OutboundMessage.objects.update_or_create(
                user_message=message,
                part=part,
                defaults={
                    "recipient": address,
                    "text": kept,
                    "status": OutboundMessage.Status.FAILED,
                    "errors": [exc.body] if exc.body is not None else [str(exc)],
                },
            )
            raise DeliveryPermanentError(str(exc)) from exc
        stored_despite_outage(
            partial(
                OutboundMessage.objects.update_or_create,
                user_message=message,
                part=part,
                defaults={"recipient": address, "text": kept, "wamid": wamid},
            ),
            what=f"sent message {wamid}",
            wait=graph.wait,
        )
