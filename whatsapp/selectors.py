"""Reads the WhatsApp side of the worker shares.

The reads of every message's answer and delivery are plain statements: building them
with the ORM cost several times the statement itself (docs/benchmarks.md). Table and
column names come from the models; the values are parameters."""

from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import Count, Max, Min

from audit.toolkit import columns, db_datetime, db_names, first_column, one_row
from multichannel.models import UserMessage
from whatsapp.models import InboundMessage, OutboundMessage, WebhookDelivery, WhatsAppIdentity

_INBOUND, _OF_MESSAGE, _FROM, _INBOUND_SENT = db_names(
    InboundMessage, "user_message", "identity", "sent_at"
)
_IDENTITY, _IDENTITY_ID, _IDENTITY_WA_ID, _IDENTITY_BSUID = db_names(
    WhatsAppIdentity, "id", "wa_id", "bsuid"
)
_OUTBOUND, _REPLYING_TO, _PART, _WAMID = db_names(OutboundMessage, "user_message", "part", "wamid")
_MESSAGE, _MESSAGE_ID, _SENDER, _KIND, _SENT = db_names(
    UserMessage, "id", "end_user", "kind", "sent_at"
)
_DELIVERY, _DELIVERY_ID, _PROCESSED = db_names(WebhookDelivery, "id", "processed_at")
_WAITING_UPTO = (
    f"SELECT {_DELIVERY_ID} FROM {_DELIVERY} WHERE {_DELIVERY_ID} <= %s "  # noqa: S608
    f"AND {_PROCESSED} IS NULL ORDER BY {_DELIVERY_ID} LIMIT %s"
)
_PARTS_SENT = f"SELECT {_PART} FROM {_OUTBOUND} WHERE {_REPLYING_TO} = %s AND {_WAMID} IS NOT NULL"  # noqa: S608
_LAST_WRITTEN_BEFORE = f"SELECT MAX({_INBOUND_SENT}) < %s FROM {_INBOUND} WHERE {_FROM} = %s"  # noqa: S608
_WRITTEN_SINCE = (
    f"SELECT 1 FROM {_MESSAGE} WHERE {_SENDER} = %s AND {_KIND} <> %s "  # noqa: S608
    f"AND ({_SENT} > %s OR ({_SENT} = %s AND {_MESSAGE_ID} > %s)) LIMIT 1"
)


def deliveries_waiting_upto(delivery_id: int, *, limit: int) -> list[int]:
    """The ids of the deliveries up to `delivery_id` not fanned out yet, oldest first."""
    return first_column(_WAITING_UPTO, [delivery_id, limit])


def delivery_claim(delivery_id: int) -> WebhookDelivery | None:
    """The delivery if it still waits for its fan-out, its row locked (PostgreSQL) for
    the caller's transaction: a second worker on it waits, then finds it processed."""
    delivery_columns = columns(WebhookDelivery, "d", connection)
    sql = (
        f"SELECT {delivery_columns.sql} FROM {_DELIVERY} d "  # noqa: S608
        f"WHERE d.{_DELIVERY_ID} = %s AND d.{_PROCESSED} IS NULL"
    )
    if connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    row = one_row(sql, [delivery_id])
    return None if row is None else delivery_columns.instance(row, connection)


def identity_matching(*, wa_id: str | None, bsuid: str | None) -> WhatsAppIdentity | None:
    """The first WhatsApp sender known by either id (at least one given)."""
    identity_columns = columns(WhatsAppIdentity, "w", connection)
    matches = [(_IDENTITY_WA_ID, wa_id), (_IDENTITY_BSUID, bsuid)]
    given = [(column, value) for column, value in matches if value]
    where = " OR ".join(f"w.{column} = %s" for column, _ in given)
    row = one_row(
        f"SELECT {identity_columns.sql} FROM {_IDENTITY} w WHERE {where} "  # noqa: S608
        f"ORDER BY w.{_IDENTITY_ID} LIMIT 1",
        [value for _, value in given],
    )
    return None if row is None else identity_columns.instance(row, connection)


def inbound_of(message: UserMessage) -> InboundMessage:
    """The WhatsApp message behind `message`, with its sender: read once per message
    object (the opt-out check, the typing indicator, the erasure words and the delivery
    of one step share it) and kept on it, as Django keeps a related object (a message
    with none raises as `message.whatsapp_inbound` would)."""
    related = UserMessage.whatsapp_inbound.related
    if not related.is_cached(message):
        inbound_columns = columns(InboundMessage, "i", connection)
        identity_columns = columns(WhatsAppIdentity, "w", connection)
        row = one_row(
            f"SELECT {inbound_columns.sql}, {identity_columns.sql} FROM {_INBOUND} i "  # noqa: S608
            f"JOIN {_IDENTITY} w ON w.{_IDENTITY_ID} = i.{_FROM} WHERE i.{_OF_MESSAGE} = %s",
            [message.pk],
        )
        inbound = None
        if row is not None:
            inbound = inbound_columns.instance(row, connection)
            identity = identity_columns.instance(row, connection, start=inbound_columns.width)
            InboundMessage.identity.field.set_cached_value(inbound, identity)
            InboundMessage.user_message.field.set_cached_value(inbound, message)
        related.set_cached_value(message, inbound)
    found: InboundMessage = message.whatsapp_inbound
    return found


def parts_sent(message: UserMessage) -> set[int]:
    """The parts of the reply to `message` the Graph API has accepted."""
    return set(first_column(_PARTS_SENT, [message.pk]))


def last_written_before(identity: WhatsAppIdentity, moment: datetime) -> bool:
    """Whether this WhatsApp user's last message to us is older than `moment` (False
    when they never wrote)."""
    row = one_row(_LAST_WRITTEN_BEFORE, [db_datetime(moment), identity.pk])
    return bool(row and row[0])


def written_since(message: UserMessage) -> bool:
    """Whether the user sent another message (a rating aside) after `message`."""
    sent_at = db_datetime(message.sent_at)
    params = [message.end_user_id, UserMessage.Kind.FEEDBACK, sent_at, sent_at, message.pk]
    return one_row(_WRITTEN_SINCE, params) is not None


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
