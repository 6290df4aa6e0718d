"""Delivering a stored reply over WhatsApp: mark the user's message read, then send the
reply, formatted for WhatsApp, in parts of at most 4096 characters. A part already
accepted by the Graph API is never sent again, so a retry after a crash or a transient
failure resumes where it was; a reply whose parts all went out is not prepared again (a
sign-in link is issued only while some part is still to be sent, so a retry never
replaces the link the user got).

WhatsApp's rules apply: outside the 24-hour customer-service window (counted from the
user's last message) only an approved template may be sent, and a user who opted out
gets nothing but the confirmation of it."""

import logging
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.utils import timezone

from audit.toolkit import upsert_row
from multichannel.channels import (
    DeliveryPermanentError,
    DeliveryTransientError,
    reply_to_keep,
    reply_to_send,
)
from multichannel.durability import stored_despite_outage
from multichannel.metrics import WHATSAPP_SENDS
from multichannel.models import UserMessage
from multichannel.redaction import redact, redact_value
from whatsapp.formatting import whatsapp_markdown
from whatsapp.graph import GraphClient, GraphError, graph_client, split_message
from whatsapp.models import InboundMessage, OutboundMessage, WhatsAppIdentity
from whatsapp.privacy import ERASE
from whatsapp.selectors import inbound_of, last_written_before, parts_sent, written_since
from whatsapp.services import START, STOP, read_mark_store

logger = logging.getLogger(__name__)

# Graph API: "Re-engagement message" (more than 24 hours since the user's last message).
OUTSIDE_WINDOW_CODE = 131047


class _Address:
    def __init__(self, identity: WhatsAppIdentity) -> None:
        self.to = identity.wa_id
        self.recipient = None if self.to else identity.bsuid
        self.text = self.to or self.recipient or ""


def whatsapp_deliver(message: UserMessage) -> None:
    inbound = inbound_of(message)
    identity = inbound.identity
    if identity.opted_out_at is not None and message.kind not in (STOP, START, ERASE):
        raise DeliveryPermanentError("not sent: the user opted out (STOP)")
    graph = graph_client()
    _mark_read(graph, inbound)
    address = _Address(identity)
    kept_parts = split_message(whatsapp_markdown(reply_to_keep(message)))
    sent = parts_sent(message)
    if all(part in sent for part in range(len(kept_parts))):
        return  # every part went out before (the delivered state was not saved then)
    if _outside_window(identity):
        _reengage(graph, message, address)
        return
    # Quote the message answered when the user has written since: the reply is then
    # clearly about this one, not the latest.
    quote = inbound.wamid if written_since(message) else None
    for part, text in enumerate(split_message(whatsapp_markdown(reply_to_send(message)))):
        if part in sent:
            continue
        kept = kept_parts[part] if part < len(kept_parts) else ""
        try:
            wamid = graph.send_text(
                text=text, to=address.to, recipient=address.recipient, reply_to=quote
            )
        except GraphError as exc:
            if exc.code == OUTSIDE_WINDOW_CODE:
                # Meta says the window has closed: the same rule as our own check.
                if not settings.WHATSAPP_REENGAGE_TEMPLATE:
                    _failed(message, part, address, kept, exc)
                _reengage(graph, message, address, graph_error=exc)
                return
            if exc.transient:
                raise DeliveryTransientError(str(exc)) from exc
            _failed(message, part, address, kept, exc)
            raise DeliveryPermanentError(str(exc)) from exc
        _sent(graph, message, part, address, kept, wamid)
        quote = None  # the first part quotes; the rest follow it


def _mark_read(graph: GraphClient, inbound: InboundMessage) -> None:
    if inbound.read_marked:
        return
    try:
        graph.mark_read(inbound.wamid)
    except GraphError as exc:
        logger.info("could not mark %s read: %s", inbound.wamid, exc)  # cosmetic only
    else:
        read_mark_store(inbound)


def _outside_window(identity: WhatsAppIdentity) -> bool:
    window = timedelta(hours=settings.WHATSAPP_WINDOW_HOURS)
    return last_written_before(identity, timezone.now() - window)


def _reengage(
    graph: GraphClient,
    message: UserMessage,
    address: _Address,
    *,
    graph_error: GraphError | None = None,
) -> None:
    """Outside the window: the configured template instead of the reply, or a failure
    that says why. Never free text."""
    if (
        OutboundMessage.objects.filter(user_message=message, wamid__isnull=False)
        .exclude(template="")
        .exists()
    ):
        return  # the template went out before
    template = settings.WHATSAPP_REENGAGE_TEMPLATE
    if not template:
        said = f" (Graph API: {graph_error})" if graph_error else ""
        raise DeliveryPermanentError(
            "not sent: outside WhatsApp's 24-hour customer-service window, and no "
            f"WHATSAPP_REENGAGE_TEMPLATE is configured{said}"
        )
    name, _, language = template.partition(":")
    try:
        wamid = graph.send_template(
            name=name, language=language or "en_US", to=address.to, recipient=address.recipient
        )
    except GraphError as exc:
        if exc.transient:
            raise DeliveryTransientError(str(exc)) from exc
        _failed(message, 0, address, f"[template {name}]", exc, template=name)
        raise DeliveryPermanentError(str(exc)) from exc
    _sent(graph, message, 0, address, f"[template {name}]", wamid, template=name)


def _sent(
    graph: GraphClient,
    message: UserMessage,
    part: int,
    address: _Address,
    kept: str,
    wamid: str,
    template: str = "",
) -> None:
    WHATSAPP_SENDS.labels("template" if template else "accepted").inc()
    stored_despite_outage(
        partial(
            _outbound_keep,
            message,
            part,
            recipient=address.text,
            text=kept,
            wamid=wamid,
            template=template,
        ),
        what=f"sent message {wamid}",
        wait=graph.wait,
    )


def _outbound_keep(message: UserMessage, part: int, **fields: object) -> None:
    """Write one part's row in one statement: inserted, or where it exists (a retry
    after a failure, or a repeat after a lost answer) its `fields` updated. No lock or
    savepoint: one worker holds this user's lease."""
    outbound = OutboundMessage(user_message=message, part=part, **fields)
    upsert_row(outbound, by=("user_message", "part"), fields=[*fields, "updated_at"])


def _failed(
    message: UserMessage,
    part: int,
    address: _Address,
    kept: str,
    exc: GraphError,
    template: str = "",
) -> None:
    WHATSAPP_SENDS.labels("failed").inc()
    # Auditors read this row: an error body may echo our access token.
    error = redact_value(exc.body) if exc.body is not None else redact(str(exc))
    _outbound_keep(
        message,
        part,
        recipient=address.text,
        text=kept,
        template=template,
        status=OutboundMessage.Status.FAILED,
        errors=[error],
    )
