import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_event_record
from audit.toolkit import db_names, insert_row, rows_changed, update_row
from multichannel.channels import command_kind
from multichannel.durability import written_promptly
from multichannel.models import Channel, EndUser, Media, UserMessage
from multichannel.redaction import exception_text
from multichannel.tasks import process_end_user_on_commit
from whatsapp.metrics import DELIVERIES_SET_ASIDE
from whatsapp.models import InboundMessage, OutboundMessage, WebhookDelivery, WhatsAppIdentity
from whatsapp.payload import (
    IncomingMessage,
    PreferenceUpdate,
    StatusUpdate,
    parse_webhook,
    storable,
)
from whatsapp.selectors import deliveries_waiting_upto, delivery_claim, identity_matching

logger = logging.getLogger(__name__)

# A message we cannot read (a sticker, a location, an empty text): a fixed reply.
UNSUPPORTED = "unsupported"
# Opting out and back in (WHATSAPP_STOP_KEYWORD, WHATSAPP_START_KEYWORD).
STOP = "stop"
START = "start"


def identity_resolve(
    *, wa_id: str | None, bsuid: str | None, isolated: bool = True
) -> WhatsAppIdentity:
    """The identity for a sender, created with a new EndUser on first contact.

    A sender is matched by either id; when a message brings an id we did not know yet
    for a known sender (a BSUID next to a known phone number, say), it is added.
    Not `isolated`: a first contact is created without a savepoint, and a concurrent
    delivery that created the same sender first is the caller's IntegrityError.
    """
    if not wa_id and not bsuid:
        raise ValueError("a WhatsApp sender needs a wa_id or a business-scoped user id")
    # Nearly every message comes from a sender we already know by exactly these ids:
    # one plain read, and no lock, as nothing is written.
    identity = identity_matching(wa_id=wa_id, bsuid=bsuid)
    if identity is None and not isolated:
        return WhatsAppIdentity.objects.create(
            end_user=EndUser.objects.create(), wa_id=wa_id or None, bsuid=bsuid or None
        )
    if identity is None:
        try:
            with transaction.atomic():
                return WhatsAppIdentity.objects.create(
                    end_user=EndUser.objects.create(),
                    wa_id=wa_id or None,
                    bsuid=bsuid or None,
                )
        except IntegrityError:
            pass  # A concurrent delivery created the same sender first.
    elif not _ids_to_add(identity, wa_id=wa_id, bsuid=bsuid):
        return identity
    match = Q()
    if wa_id:
        match |= Q(wa_id=wa_id)
    if bsuid:
        match |= Q(bsuid=bsuid)
    with transaction.atomic():
        identity = WhatsAppIdentity.objects.select_for_update().filter(match).earliest("pk")
        changed = _ids_to_add(identity, wa_id=wa_id, bsuid=bsuid)
        if changed:
            for field, value in changed.items():
                setattr(identity, field, value)
            try:
                with transaction.atomic():
                    identity.save(update_fields=[*changed, "updated_at"])
            except IntegrityError:
                # The new id already names another sender, that is another end user.
                # People are never merged here; the message stays with the sender it
                # matched instead of failing (its caller would take it for a redelivery).
                for field in changed:
                    setattr(identity, field, None)
                logger.warning(
                    "sender %s: %s already belongs to another identity",
                    identity.pk,
                    ", ".join(changed),
                )
    return identity


def masked_phone(wa_id: str) -> str:
    """A phone number someone can recognise as theirs without it being shown whole:
    the country-code end and the last four digits ("+15•••••4567")."""
    if len(wa_id) <= 6:
        return "+" + "•" * (len(wa_id) - 2) + wa_id[-2:]
    return f"+{wa_id[:2]}{'•' * (len(wa_id) - 6)}{wa_id[-4:]}"


def identity_label(end_user: EndUser) -> str | None:
    """How the web shows whose account this is: the masked WhatsApp number (or the end
    of the business-scoped id for a sender who shares no number)."""
    identity = WhatsAppIdentity.objects.filter(end_user=end_user).first()
    if identity is None:
        return None
    if identity.wa_id:
        return f"WhatsApp {masked_phone(identity.wa_id)}"
    if identity.bsuid:
        return f"WhatsApp user …{identity.bsuid[-4:]}"
    return None


def _ids_to_add(
    identity: WhatsAppIdentity, *, wa_id: str | None, bsuid: str | None
) -> dict[str, str]:
    changed = {}
    if wa_id and identity.wa_id is None:
        changed["wa_id"] = wa_id
    if bsuid and identity.bsuid is None:
        changed["bsuid"] = bsuid
    return changed


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
    given = header[len("sha256=") :].strip().lower()
    if not given.isascii():
        # compare_digest refuses non-ASCII text; such a header cannot be a hex digest.
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


@dataclass(frozen=True)
class WebhookResult:
    delivery_id: int
    stored: int
    duplicates: int
    statuses_applied: int
    # The one person whose new messages were left for the caller to answer instead of
    # being queued (`delivery_fan_out`'s `answer_own`), if any.
    left_to_caller: str | None = None


def webhook_accept(*, raw_body: bytes, payload: dict[str, Any]) -> WebhookDelivery:
    """Keep a verified webhook exactly as received: one INSERT, committed on its own
    (the request runs in autocommit), so that Meta's 200 waits for nothing else. Its
    messages and statuses are stored by `delivery_fan_out`, in the worker."""
    kind = payload.get("object")
    delivery = WebhookDelivery(
        object=storable(kind)[:64] if isinstance(kind, str) else "",
        raw_body=raw_body.decode("utf-8", errors="replace"),
    )
    # On SQLite, not queued behind the worker's writes with ever longer sleeps.
    written_promptly(lambda: insert_row(delivery))
    return delivery


# How many kept deliveries one fan-out reads at a time.
FAN_OUT_BATCH = 100


def delivery_fan_out(delivery_id: int, *, answer_own: bool = False) -> list[WebhookResult]:
    """Store what a kept delivery carries, after every delivery kept before it that is
    still waiting, oldest first: so a message acknowledged before another was sent is
    stored (and so answered) before it, as when the request stored it. Each delivery's
    new messages (once per WhatsApp message id), status updates and preference changes
    are one transaction that also marks it processed; its answers are queued after
    commit. Returns what each delivery fanned out here stored; none if another worker
    got to them first (a repeated task, or recovery racing the first one).

    With `answer_own`, new messages of one person in `delivery_id` itself are not
    queued: its result names them (`left_to_caller`), and the caller (the fan-out task)
    answers them next, in the same thread, instead of a second task doing it after a
    trip through the queue. Any other person, and every older delivery, is queued.

    Nearly every message arrives once, so the first attempt is plain inserts, with no
    lookup of ids stored already and no savepoints. A redelivered message makes one of
    them fail (the unique WhatsApp id); then the whole transaction is rolled back and
    done again the careful way, which finds every stored id in one query and isolates
    each message, so a concurrent delivery of the same message is refused alone."""
    with _fan_out_lock:
        return _fan_out_upto(delivery_id, answer_own=answer_own)


# One fan-out at a time in a process. Each fans out every older delivery still waiting
# first, so a consumer's threads fanning out at once would queue on each other's row
# locks, one transaction per delivery per thread (a PostgreSQL pipeline run, 64
# threads: 49 ms of consumer CPU a message against 24). In turn, a thread finds its
# delivery done with one query. Consumers in other processes stay correct by the row
# locks alone.
_fan_out_lock = threading.Lock()


def _fan_out_upto(delivery_id: int, *, answer_own: bool) -> list[WebhookResult]:
    results: list[WebhookResult] = []
    while True:
        waiting = deliveries_waiting_upto(delivery_id, limit=FAN_OUT_BATCH)
        for pk in waiting:
            try:
                result = _delivery_store(pk, answer_own=answer_own and pk == delivery_id)
            except (OperationalError, InterfaceError):
                raise  # the database is away or locked: the task is retried, all wait
            except Exception as exc:
                # Anything else is this delivery's own (a value no column takes, a bug):
                # it must not hold up every delivery after it.
                _delivery_set_aside(pk, exc)
                continue
            if result is not None:
                results.append(result)
        if len(waiting) < FAN_OUT_BATCH:
            return results


def _delivery_store(pk: int, *, answer_own: bool) -> WebhookResult | None:
    try:
        return _webhook_store(pk, careful=False, answer_own=answer_own)
    except IntegrityError:
        return _webhook_store(pk, careful=True, answer_own=answer_own)


def _delivery_set_aside(pk: int, exc: Exception) -> None:
    """Mark a delivery that cannot be fanned out as done, with the error, for the
    operator (the admin lists it; the body is kept as received)."""
    logger.exception("webhook %s could not be fanned out; set aside", pk)
    DELIVERIES_SET_ASIDE.inc()
    WebhookDelivery.objects.filter(pk=pk, processed_at__isnull=True).update(
        processed_at=timezone.now(), fan_out_error=exception_text(exc)[:2000]
    )


def _payload(raw_body: str) -> dict[str, Any]:
    # The request refused anything but a JSON object; an erasure may have blanked the
    # body since (then it carries nothing any more).
    try:
        payload = json.loads(raw_body)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _webhook_store(pk: int, *, careful: bool, answer_own: bool) -> WebhookResult | None:
    stored = duplicates = 0
    users: set[str] = set()
    with transaction.atomic():
        # Claims the delivery before anything is parsed: a second worker on it waits
        # here for this transaction and then finds it processed (SQLite has no row
        # locks; its writing transactions queue for the one write lock instead).
        delivery = delivery_claim(pk)
        if delivery is None:
            return None
        parsed = parse_webhook(_payload(delivery.raw_body), received_at=delivery.received_at)
        seen: set[str] = set()
        if careful:
            # Redeliveries: one query finds every message id already stored.
            seen = inbound_wamids_stored(wamids=[message.wamid for message in parsed.messages])
        for message in parsed.messages:
            end_user_id = None
            if message.wamid not in seen:
                seen.add(message.wamid)
                end_user_id = inbound_message_store(
                    delivery=delivery, message=message, isolated=careful
                )
            if end_user_id is None:
                duplicates += 1
            else:
                stored += 1
                users.add(end_user_id)
        applied = statuses_apply(parsed.statuses)
        if parsed.preferences:
            preferences_apply(parsed.preferences)
        delivery.processed_at = timezone.now()
        delivery.message_count = len(parsed.messages)
        delivery.status_count = len(parsed.statuses)
        update_row(delivery, ["processed_at", "message_count", "status_count"])
    left_to_caller = users.pop() if answer_own and len(users) == 1 else None
    for end_user_id in sorted(users):
        process_end_user_on_commit(end_user_id)
    return WebhookResult(pk, stored, duplicates, applied, left_to_caller)


# Bounds the parameters of one `IN (...)` query (SQLite allows 32766 at most).
IN_BATCH = 500


def _batches(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), IN_BATCH):
        yield values[start : start + IN_BATCH]


def inbound_wamids_stored(*, wamids: list[str]) -> set[str]:
    """Which of these WhatsApp message ids are stored already."""
    stored: set[str] = set()
    for batch in _batches(sorted(set(wamids))):
        stored.update(
            InboundMessage.objects.filter(wamid__in=batch).values_list("wamid", flat=True)
        )
    return stored


MEDIA_KINDS = {
    "audio": UserMessage.Kind.AUDIO,
    "image": UserMessage.Kind.IMAGE,
    "document": UserMessage.Kind.DOCUMENT,
}


def message_kind(message: IncomingMessage) -> str:
    if message.media is not None:
        return MEDIA_KINDS[message.type]
    if message.reaction is not None:
        return UserMessage.Kind.FEEDBACK  # a rating of our reply: never answered
    text = message.text.strip()
    if message.type != "text" or not text:
        return UNSUPPORTED
    # A command (LOGIN: a sign-in link; STOP, START), never sent to MKA1.
    return command_kind(text) or UserMessage.Kind.TEXT


def inbound_message_store(
    *, delivery: WebhookDelivery, message: IncomingMessage, isolated: bool = True
) -> str | None:
    """Store one message and return its end user's id.

    `isolated`: in a savepoint of its own, so that a message id stored already (a
    redelivery; check `inbound_wamids_stored` first, this finds one only by an insert
    that fails) returns None and the rest of the transaction goes on. Without it, that
    IntegrityError is the caller's, and its transaction must be rolled back."""
    if not isolated:
        return _inbound_message_insert(delivery, message, isolated=False)
    try:
        with transaction.atomic():
            return _inbound_message_insert(delivery, message, isolated=True)
    except IntegrityError:
        # The same message id arrived in a concurrent delivery that committed first.
        return None


def _inbound_message_insert(
    delivery: WebhookDelivery, message: IncomingMessage, *, isolated: bool
) -> str:
    identity = identity_resolve(wa_id=message.wa_id, bsuid=message.bsuid, isolated=isolated)
    # Plain INSERTs (audit.toolkit.insert_row): two of the fan-out's few statements.
    user_message = UserMessage(
        end_user_id=identity.end_user_id,
        channel=Channel.WHATSAPP,
        kind=message_kind(message),
        external_id=message.wamid,
        text=message.text.strip(),
        sent_at=message.sent_at,
    )
    insert_row(user_message)
    insert_row(
        InboundMessage(
            wamid=message.wamid,
            delivery=delivery,
            identity=identity,
            user_message=user_message,
            type=message.type[:32],
            phone_number_id=message.phone_number_id,
            sent_at=message.sent_at,
            raw=message.raw,
        )
    )
    if message.media is not None:
        media = message.media
        Media.objects.create(
            message=user_message,
            external_id=media.id,
            mime_type=media.mime_type,
            filename=media.filename,
            caption=media.caption,
            voice=media.voice,
            expected_sha256=media.sha256,
        )
    return identity.end_user_id


def preferences_apply(preferences: list[PreferenceUpdate]) -> int:
    """Meta's user_preferences webhook: a user who stopped gets no further messages
    until they resume (or send START). Each change is audited."""
    applied = 0
    for preference in preferences:
        identity = identity_resolve(wa_id=preference.wa_id, bsuid=preference.bsuid)
        applied += opt_out_set(
            identity=identity,
            stopped=preference.value == "stop",
            source="user_preferences",
            at=preference.at,
        )
    return applied


_INBOUND, _INBOUND_ID, _READ_MARKED = db_names(InboundMessage, "id", "read_marked")
_MARK_READ = f"UPDATE {_INBOUND} SET {_READ_MARKED} = %s WHERE {_INBOUND_ID} = %s"  # noqa: S608


def read_mark_store(inbound: InboundMessage) -> None:
    """Keep that the user's message was marked read (by the read receipt or the typing
    indicator), so neither is sent for it again: one plain UPDATE on every message."""
    inbound.read_marked = True
    rows_changed(_MARK_READ, [True, inbound.pk])


def opt_out_set(
    *, identity: WhatsAppIdentity, stopped: bool, source: str, at: datetime | None = None
) -> int:
    """Record that the user stopped (or resumed) messages; 1 if that changed anything."""
    with transaction.atomic():
        locked = WhatsAppIdentity.objects.select_for_update().get(pk=identity.pk)
        if (locked.opted_out_at is not None) == stopped:
            return 0
        locked.opted_out_at = (at or timezone.now()) if stopped else None
        locked.save(update_fields=["opted_out_at", "updated_at"])
        audit_event_record(
            channel=Channel.WHATSAPP,
            action=AuditAction.OPT_OUT if stopped else AuditAction.OPT_IN,
            end_user_id=locked.end_user_id,
            context={"source": source},
        )
    identity.opted_out_at = locked.opted_out_at
    return 1


def statuses_apply(statuses: list[StatusUpdate]) -> int:
    """Apply delivery statuses to our outbound messages; returns how many moved one.
    Statuses are redelivered and may arrive out of order: only forward moves count.

    The messages are read and locked in one query (ordered by wamid, so two deliveries
    lock them in the same order and cannot deadlock) and written back in one."""
    if not statuses:
        return 0
    if len({status.wamid for status in statuses}) == 1:
        return _one_message_statuses_apply(statuses)
    outbound: dict[str, OutboundMessage] = {}
    for batch in _batches(sorted({status.wamid for status in statuses})):
        locked = OutboundMessage.objects.select_for_update().filter(wamid__in=batch)
        outbound.update((str(message.wamid), message) for message in locked.order_by("wamid"))
    changed: dict[int, OutboundMessage] = {}
    applied = 0
    for status in statuses:
        message = outbound.get(status.wamid)
        if message is None:
            logger.info("status %s for unknown message %s", status.status, status.wamid)
            continue
        if (
            STATUS_RANK[OutboundMessage.Status(status.status)]
            <= STATUS_RANK[OutboundMessage.Status(message.status)]
        ):
            continue
        message.status = status.status
        message.status_at = status.at
        if status.errors:
            message.errors = status.errors
        changed[message.pk] = message
        applied += 1
    if changed:
        now = timezone.now()  # bulk_update does not apply auto_now
        for message in changed.values():
            message.updated_at = now
        OutboundMessage.objects.bulk_update(
            changed.values(), ["status", "status_at", "errors", "updated_at"]
        )
    return applied


def _one_message_statuses_apply(statuses: list[StatusUpdate]) -> int:
    """The common case, three webhooks in four: statuses for one message. One
    conditional UPDATE moves it to the furthest of them if that is forward, with no
    read first (half the webhook's CPU went to reading, locking and saving the row)."""
    furthest = max(statuses, key=lambda status: STATUS_RANK[OutboundMessage.Status(status.status)])
    rank = STATUS_RANK[OutboundMessage.Status(furthest.status)]
    behind = [status for status, value in STATUS_RANK.items() if value < rank]
    changes: dict[str, Any] = {"status": furthest.status, "status_at": furthest.at}
    if furthest.errors:
        changes["errors"] = furthest.errors
    moved = OutboundMessage.objects.filter(wamid=furthest.wamid, status__in=behind).update(
        **changes, updated_at=timezone.now()
    )
    if not moved:
        logger.info(
            "status %s for %s: unknown message, or not newer", furthest.status, furthest.wamid
        )
    return moved
