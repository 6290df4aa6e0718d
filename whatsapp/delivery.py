"""Delivering a stored reply over WhatsApp: mark the user's message read, then send the
reply in parts of at most 4096 characters. A part already accepted by the Graph API is
never sent again, so a retry after a crash or a transient failure resumes where it was;
a reply whose parts all went out is not prepared again (a sign-in link is issued only
while some part is still to be sent, so a retry never replaces the link the user got)."""

import logging
from functools import partial

from multichannel.channels import (
    DeliveryPermanentError,
    DeliveryTransientError,
    reply_to_keep,
    reply_to_send,
)
from multichannel.durability import stored_despite_outage
from multichannel.models import UserMessage
from multichannel.redaction import redact, redact_value
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
    kept_parts = split_message(reply_to_keep(message))
    sent = set(
        OutboundMessage.objects.filter(user_message=message, wamid__isnull=False).values_list(
            "part", flat=True
        )
    )
    if all(part in sent for part in range(len(kept_parts))):
        return  # every part went out before (the delivered state was not saved then)
    for part, text in enumerate(split_message(reply_to_send(message))):
        if part in sent:
            continue
        kept = kept_parts[part] if part < len(kept_parts) else ""
        try:
            wamid = graph.send_text(text=text, to=to, recipient=recipient)
        except GraphError as exc:
            if exc.transient:
                raise DeliveryTransientError(str(exc)) from exc
            # Auditors read this row: an error body may echo our access token.
            error = redact_value(exc.body) if exc.body is not None else redact(str(exc))
            OutboundMessage.objects.update_or_create(
                user_message=message,
                part=part,
                defaults={
                    "recipient": address,
                    "text": kept,
                    "status": OutboundMessage.Status.FAILED,
                    "errors": [error],
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
