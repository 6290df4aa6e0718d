"""The audit store: an append-only ledger of every interaction on both channels.

Ids are stored as values, never as foreign keys, so no deletion anywhere can cascade
into the ledger. Rows are written only by `audit.services.audit_event_record`.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import cache
from typing import Any, NoReturn

from django.db import IntegrityError, connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from audit.erasure import COMPLIANCE_ACTIONS, ERASED_CONTEXT
from audit.integrity import (
    GENESIS_HASH,
    canonical_context,
    chain_hash,
    content_digest,
    format_timestamp,
    ledger_moment,
)
from audit.metrics import AUDIT_EVENTS
from audit.toolkit import insert_columns, insert_statement, insert_values
from audit.wire import WireObject, full_response_text


class AppendOnlyError(Exception):
    """Raised on any attempt to change or remove an audit event."""


class LedgerUnavailableError(Exception):
    """The ledger cannot be written (its chain head is missing while events exist):
    nothing that must be audited may happen until an operator has looked."""

    @classmethod
    def head_lost(cls) -> "LedgerUnavailableError":
        return cls(
            "the audit chain head is missing while the ledger holds events; "
            "run verify_audit and restore it before anything else is recorded"
        )


class AuditChannel(models.TextChoices):
    """Where an event happened: the channel the end user used."""

    WHATSAPP = "whatsapp", "WhatsApp"
    WEBAPP = "webapp", "Web app"
    # What the operator did: erasure, retention, legal hold.
    OPERATOR = "operator", "Operator"


class AuditAction(models.TextChoices):
    """What happened. MKA1 calls are named after the API's operations; a failed call
    is the operation with `.failed`."""

    CONVERSATIONS_CREATE = "conversations.create"
    CONVERSATIONS_CREATE_FAILED = "conversations.create.failed"
    RESPONSES_CREATE = "responses.create"
    RESPONSES_CREATE_FAILED = "responses.create.failed"
    RESPONSES_GET = "responses.get"
    RESPONSES_GET_FAILED = "responses.get.failed"
    CONVERSATIONS_ITEMS_GET = "conversations.items.get"
    CONVERSATIONS_ITEMS_GET_FAILED = "conversations.items.get.failed"
    SPEECH_TRANSCRIPTIONS = "speech.transcriptions"
    SPEECH_TRANSCRIPTIONS_FAILED = "speech.transcriptions.failed"
    FILES_CREATE = "files.create"
    FILES_CREATE_FAILED = "files.create.failed"
    FEEDBACK_CREATE = "feedback.create"
    FEEDBACK_CREATE_FAILED = "feedback.create.failed"
    SIGNIN_LINK_ISSUED = "signin.link_issued"
    SIGNIN_LINK_USED = "signin.link_used"
    # A user asked for no more messages (STOP, or Meta's user_preferences), or resumed.
    OPT_OUT = "optout.stop"
    OPT_IN = "optout.start"
    # Erasing a person's data at MKA1 (every call audited, as all MKA1 calls are)...
    RESPONSES_DELETE = "responses.delete"
    RESPONSES_DELETE_FAILED = "responses.delete.failed"
    CONVERSATIONS_ITEMS_LIST = "conversations.items.list"
    CONVERSATIONS_ITEMS_LIST_FAILED = "conversations.items.list.failed"
    CONVERSATIONS_ITEMS_DELETE = "conversations.items.delete"
    CONVERSATIONS_ITEMS_DELETE_FAILED = "conversations.items.delete.failed"
    CONVERSATIONS_DELETE = "conversations.delete"
    CONVERSATIONS_DELETE_FAILED = "conversations.delete.failed"
    FILES_DELETE = "files.delete"
    FILES_DELETE_FAILED = "files.delete.failed"
    SPEECH_TRANSCRIPTIONS_LIST = "speech.transcriptions.list"
    SPEECH_TRANSCRIPTIONS_LIST_FAILED = "speech.transcriptions.list.failed"
    SPEECH_TRANSCRIPTIONS_DELETE = "speech.transcriptions.delete"
    SPEECH_TRANSCRIPTIONS_DELETE_FAILED = "speech.transcriptions.delete.failed"
    # ...and here: what was erased, and why (audit/erasure.py); retention runs; holds.
    ERASURE = "erasure"
    RETENTION = "retention"
    LEGAL_HOLD_ADD = "legal_hold.add"
    LEGAL_HOLD_REMOVE = "legal_hold.remove"

    @classmethod
    def failed(cls, operation: str) -> "AuditAction":
        """The action recording a failed call of `operation` (ValueError if none)."""
        return cls(f"{operation}.failed")


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events cannot be updated")

    def delete(self) -> NoReturn:
        raise AppendOnlyError("audit events cannot be deleted")

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events cannot be updated")

    def bulk_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events are written one at a time by audit_event_record")

    def update_or_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events cannot be updated")

    def create(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events are written only by AuditEvent.objects.record")

    def get_or_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events are written only by AuditEvent.objects.record")

    def record(
        self,
        *,
        channel: str,
        action: str,
        end_user_id: str,
        response_id: str | None = None,
        conversation_id: str | None = None,
        previous_response_id: str | None = None,
        full_response: WireObject | Mapping[str, Any] | None = None,
        api_key_fingerprint: str = "",
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
    ) -> "AuditEvent":
        """Append one event to the ledger and the hash chain.

        Inside a transaction, holds the chain head's row lock until that transaction
        commits, so concurrent writers line up one after the other: each takes the next
        sequence number and chains to the hash before it. Outside one, on PostgreSQL,
        the event is appended only if the head has not moved since it was read (and
        under the lock if it has): the same order, without a transaction of its own."""
        channel, action = AuditChannel(channel), AuditAction(action)  # or ValueError
        if not end_user_id and channel != AuditChannel.OPERATOR:
            raise ValueError("an audit event needs the end user id")
        text = full_response_text(full_response)
        body_digest = hashlib.sha256(text.encode()).hexdigest() if text != "null" else None
        content: dict[str, Any] = {
            "channel": channel,
            "action": action,
            "end_user_id": end_user_id,
            "response_id": response_id,
            "conversation_id": conversation_id,
            "previous_response_id": previous_response_id,
            "api_key_fingerprint": api_key_fingerprint,
            # JSON-safe, or refused now rather than by the database.
            "context": json.loads(canonical_context(context)),
        }
        connection = connections[self.db]
        # Outside a transaction of the caller's, PostgreSQL appends without taking the
        # lock and without a transaction: the head is read, and one statement moves it
        # on only if it is still there, inserting the event and its body (two round
        # trips in all). If a concurrent writer moved the head meanwhile, nothing was
        # written, and the event is appended under the lock below.
        if connection.vendor == "postgresql" and not connection.in_atomic_block:
            event = _append(connection, content, text, body_digest, timestamp, lock=False)
            if event is not None:
                return event
        # Inside the caller's transaction, no savepoint of our own: an error here leaves
        # that transaction to be rolled back, as any failed statement would.
        with transaction.atomic(using=self.db, savepoint=False):
            event = _append(connection, content, text, body_digest, timestamp, lock=True)
        if event is None:
            # No head (nothing was written): a new ledger starts one, a ledger that lost
            # it is refused, in a savepoint of its own so that a refusal leaves the
            # caller's transaction usable.
            with transaction.atomic(using=self.db):
                AuditChainHead.objects.using(self.db).locked()
                event = _append(connection, content, text, body_digest, timestamp, lock=True)
            if event is None:
                raise LedgerUnavailableError.head_lost()
        return event

    def erase_content(
        self,
        *,
        before_sequence: int | None = None,
        end_user_ids: Iterable[str] | None = None,
        older_than: datetime | None = None,
        keep_end_user_ids: Iterable[str] = (),
        dry_run: bool = False,
    ) -> int:
        """Remove the personal content of the events before `before_sequence` (the
        erasure or retention event that says why; None, only with `dry_run`: every
        event so far), of these end users and/or older
        than `older_than`, except compliance records and users in `keep_end_user_ids`
        (a legal hold). Rows, sequences, digests and hashes stay: context becomes `{}`
        and the body reference null; bodies no remaining event needs are deleted.
        Returns how many events lost content (with `dry_run`, would lose it, and
        nothing changes); running it again changes nothing."""
        if before_sequence is None and not dry_run:
            raise ValueError("content is erased only before the event that says why")
        events = _erasable(self.all())
        if before_sequence is not None:
            events = events.filter(sequence__lt=before_sequence)
        if end_user_ids is not None:
            events = events.filter(end_user_id__in=list(end_user_ids))
        if older_than is not None:
            events = events.filter(timestamp__lt=older_than)
        keep = list(keep_end_user_ids)
        if keep:
            events = events.exclude(end_user_id__in=keep)
        if dry_run:
            return events.count()
        with transaction.atomic(using=self.db):
            bodies = set(
                events.exclude(body__isnull=True).values_list("body_id", flat=True).distinct()
            )
            # The one change the append-only triggers let through (audit/triggers.py).
            erased = models.QuerySet.update(events, context=ERASED_CONTEXT, body=None)
            still_needed = set(
                self.filter(body_id__in=bodies).values_list("body_id", flat=True).distinct()
            )
            AuditBody.objects.using(self.db).filter(digest__in=bodies - still_needed).delete()
        return erased


def _chained(
    content: Mapping[str, Any],
    text: str,
    body_digest: str | None,
    timestamp: datetime | None,
    previous_sequence: int,
    previous_hash: str,
) -> "AuditEvent":
    """The event that follows the head (`previous_sequence`, `previous_hash`), its moment
    taken now (after the head was read, so timestamps follow the chain order)."""
    moment = ledger_moment(timestamp or timezone.now())
    sequence = previous_sequence + 1
    digest = content_digest(timestamp=format_timestamp(moment), full_response=text, **content)
    return AuditEvent(
        sequence=sequence,
        timestamp=moment,
        body_id=body_digest,
        content_digest=digest,
        previous_hash=previous_hash,
        hash=chain_hash(sequence=sequence, previous_hash=previous_hash, digest=digest),
        **content,
    )


def _append(
    connection: BaseDatabaseWrapper,
    content: Mapping[str, Any],
    text: str,
    body_digest: str | None,
    timestamp: datetime | None,
    *,
    lock: bool,
) -> "AuditEvent | None":
    """Append the event after the head: with `lock`, the head held by this transaction
    until it ends; without, on PostgreSQL only, if the head has not moved since it was
    read (None if it has). None, with nothing written, if there is no head. Either way
    the moment is taken after the head was read, and that head was committed after its
    own event's moment was taken: timestamps follow the chain order. Plain statements:
    the ORM's insert and update cost several times the statements they send, on every
    audited call (docs/benchmarks.md)."""
    head = chain_head(connection, lock=lock)
    if head is None:
        return None
    event = _chained(content, text, body_digest, timestamp, *head)
    values = insert_values(event, _EVENT_FIELDS, connection)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The head moved on, the event and its body inserted: one statement.
            body = [body_digest, text] if body_digest is not None else []
            cursor.execute(
                _append_sql(with_body=body_digest is not None),
                [event.sequence, event.hash, *head, *body, *values],
            )
            row = cursor.fetchone()
            if row is None:
                return None  # moved meanwhile: nothing was written
            event.pk = row[0]
        else:
            if body_digest is not None:
                # A body seen before (the same response retrieved again) is not stored
                # again.
                cursor.execute(_BODY_INSERT, [body_digest, text])
            cursor.execute(insert_statement(AuditEvent, connection)[1], values)
            returning = connection.features.can_return_columns_from_insert
            event.pk = cursor.fetchone()[0] if returning else cursor.lastrowid
            cursor.execute(_HEAD_MOVE, [event.sequence, event.hash])
    event._state.adding = False
    event._state.db = connection.alias
    # Counted once the event is committed (at once outside a transaction).
    transaction.on_commit(
        AUDIT_EVENTS.labels(content["channel"].value, content["action"].value).inc,
        using=connection.alias,
    )
    return event


def chain_head(connection: BaseDatabaseWrapper, *, lock: bool) -> tuple[int, str] | None:
    """The chain head's (sequence, hash), or None if missing, in one plain statement.
    With `lock`, held until the transaction ends (on SQLite the transaction's write
    lock, taken at BEGIN IMMEDIATE, is the lock)."""
    suffix = " FOR UPDATE" if lock and connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(_HEAD_READ + suffix)
        row = cursor.fetchone()
    return None if row is None else (row[0], row[1])


def _erasable(queryset: "AuditEventQuerySet") -> "AuditEventQuerySet":
    return queryset.exclude(action__in=COMPLIANCE_ACTIONS).exclude(context={}, body__isnull=True)


class AuditEvent(models.Model):
    # Position in the hash chain: 1, 2, 3, ... with no gaps, assigned under a lock.
    sequence = models.BigIntegerField(unique=True)
    timestamp = models.DateTimeField(db_index=True)
    channel = models.CharField(max_length=32, choices=AuditChannel.choices)
    action = models.CharField(max_length=64, choices=AuditAction.choices)
    # Exactly the X-On-Behalf-Of value sent to MKA1 for this call.
    end_user_id = models.CharField(max_length=128, db_index=True)
    response_id = models.CharField(max_length=128, null=True, blank=True, db_index=True)
    conversation_id = models.CharField(max_length=128, null=True, blank=True, db_index=True)
    previous_response_id = models.CharField(max_length=128, null=True, blank=True)
    # The MKA1 object exactly as received, stored once per distinct text: the tenth
    # retrieval of the same response costs a row here, not another copy of the body.
    # A reference by digest, not a database foreign key: no deletion cascades into the
    # ledger, and an erased body leaves the event (and its content digest) in place.
    body = models.ForeignKey(
        "AuditBody",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_column="full_response_sha256",
        related_name="+",
    )
    # sha256 of the MKA1 API key, shortened: proves "same API user" without the key.
    api_key_fingerprint = models.CharField(max_length=64, blank=True)
    # Extra context, such as the WhatsApp message id that caused the call.
    context = models.JSONField(default=dict, blank=True)
    # Tamper evidence: a digest of this event's content, and a hash chaining it to the
    # previous event. The chain covers the digest, not the content, so a future audited
    # erasure can blank personal data and still leave the chain verifiable.
    content_digest = models.CharField(max_length=64)
    previous_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["sequence"]
        # Django's internal manager (used for related lookups and some deletes) must
        # carry the append-only guard too.
        base_manager_name = "objects"
        indexes = [
            models.Index(fields=["end_user_id", "timestamp"], name="audit_user_time"),
            models.Index(fields=["channel", "action"], name="audit_channel_action"),
        ]

    def __str__(self) -> str:
        return f"{self.timestamp:%Y-%m-%d %H:%M:%S} {self.channel} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events are written only by AuditEvent.objects.record")

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events cannot be deleted")

    @property
    def full_response(self) -> str:
        """The stored body's JSON text as exported ("null" when there is none)."""
        if self.body_id is None:
            return "null"
        try:
            return self.body.text  # type: ignore[union-attr]
        except AuditBody.DoesNotExist:  # erased
            return "null"


class AuditBody(models.Model):
    """A distinct `full_response` text, keyed by its SHA-256. JSON text, not a JSON
    column: PostgreSQL's jsonb would reorder the keys, and the export must carry the
    MKA1 object exactly as it came off the wire."""

    digest = models.CharField(primary_key=True, max_length=64)
    text = models.TextField()

    class Meta:
        verbose_name = "audit body"

    def __str__(self) -> str:
        return self.digest


class AuditChainHeadQuerySet(models.QuerySet["AuditChainHead"]):
    def locked(self) -> "AuditChainHead":
        """The head, locked until the transaction ends. A new ledger starts one; a
        ledger that has events but lost its head is refused, never restarted at 0."""
        head = self.select_for_update().filter(pk=1).first()
        if head is not None:
            return head
        if AuditEvent.objects.using(self.db).exists():
            # A concurrent writer may have started the ledger (its head and first event,
            # one transaction) between our two reads: every committed event implies a
            # committed head, so a second look tells a race from a lost head.
            head = self.select_for_update().filter(pk=1).first()
            if head is not None:
                return head
            raise LedgerUnavailableError.head_lost()
        try:
            with transaction.atomic(using=self.db):
                self.create(pk=1)
        except IntegrityError:
            pass  # a concurrent writer started it first
        return self.select_for_update().get(pk=1)


class AuditChainHead(models.Model):
    """The last link of the chain: one row, locked by every writer, so two workers
    recording at once can never fork the chain or reuse a sequence number. Database
    triggers refuse deleting it or moving it back (audit/triggers.py)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    sequence = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)

    objects = AuditChainHeadQuerySet.as_manager()

    def __str__(self) -> str:
        return f"audit chain head at {self.sequence}"


# The append's statements (names from the models, no input). SQLite and PostgreSQL
# both take INSERT ... ON CONFLICT DO NOTHING and RETURNING.
_EVENT_FIELDS, _EVENT_COLUMNS = insert_columns(AuditEvent, lambda name: f'"{name}"')
_HEAD_READ = 'SELECT "sequence", "hash" FROM "audit_auditchainhead" WHERE "id" = 1'
_HEAD_MOVE = 'UPDATE "audit_auditchainhead" SET "sequence" = %s, "hash" = %s WHERE "id" = 1'
_BODY_INSERT = (
    'INSERT INTO "audit_auditbody" ("digest", "text") VALUES (%s, %s) ON CONFLICT DO NOTHING'
)


@cache
def _append_sql(*, with_body: bool) -> str:
    """PostgreSQL: move the head on if it is still where it was read and, only then,
    insert the event (and its body, once per digest); no row back if the head had
    moved. Parameters: the new sequence and hash, the read sequence and hash, [the
    body's digest and text], then the event's columns."""
    body = (
        ', body AS (INSERT INTO "audit_auditbody" ("digest", "text") '
        "SELECT %s, %s FROM moved ON CONFLICT DO NOTHING)"
        if with_body
        else ""
    )
    placeholders = ", ".join(["%s"] * len(_EVENT_FIELDS))
    return (
        'WITH moved AS (UPDATE "audit_auditchainhead" SET "sequence" = %s, "hash" = %s '  # noqa: S608
        'WHERE "id" = 1 AND "sequence" = %s AND "hash" = %s RETURNING 1)'
        f"{body} "
        f'INSERT INTO "audit_auditevent" ({_EVENT_COLUMNS}) '
        f'SELECT {placeholders} FROM moved RETURNING "id"'
    )


# --- signed checkpoints and the stored Merkle tree (audit/tree.py, audit/checkpoints.py) ---
# Insert-only like the events: database triggers refuse UPDATE and DELETE on the first
# three (audit/triggers.py). Publications are a work queue and change as they are retried.


class AuditCheckpoint(models.Model):
    """A signed tree head: the ledger's first `size` events have Merkle root `root_hash`.
    `note` is the signed note exactly as published (c2sp.org/tlog-checkpoint)."""

    size = models.BigIntegerField(unique=True)
    root_hash = models.CharField(max_length=64)  # hex; the note carries it in base64
    # The chain hash of event `size` when this was signed: the next checkpoint checks
    # that the chain it extends is still the one signed here.
    last_hash = models.CharField(max_length=64)
    note = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-size"]
        get_latest_by = "size"

    def __str__(self) -> str:
        return f"checkpoint at {self.size}"


class AuditTreeTile(models.Model):
    """Stored hashes of the Merkle tree, laid out like c2sp.org/tlog-tiles: tile
    (level, number) holds the hashes of the complete subtrees at tree level 8 * level
    with indexes 256 * number .. 256 * number + width - 1, 32 bytes each. Full tiles
    have width 256; the partial tiles at a checkpoint's right edge are stored too, one
    row per width. Every node of the tree is one of these hashes or is computed from at
    most 128 of them, so a proof at a million events reads a handful of rows."""

    level = models.PositiveSmallIntegerField()
    number = models.BigIntegerField()
    width = models.PositiveSmallIntegerField()
    hashes = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["level", "number", "width"], name="audit_tile_unique")
        ]

    def __str__(self) -> str:
        return f"tile {self.level}/{self.number}.{self.width}"


class AuditCheckpointTimestamp(models.Model):
    """An RFC 3161 time-stamp response over a checkpoint's signed note, as the TSA sent
    it (DER), verified against AUDIT_TSA_CA_FILE before it was stored."""

    checkpoint_size = models.BigIntegerField(unique=True)
    token = models.BinaryField()
    tsa_url = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"time-stamp of checkpoint {self.checkpoint_size}"


class AuditPublication(models.Model):
    """One checkpoint to one place outside the database (a TSA, a directory, a
    witness URL). Pending until it succeeds; failures are retried and shown in /healthz."""

    checkpoint_size = models.BigIntegerField()
    target = models.CharField(max_length=500)
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    failing_since = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["checkpoint_size", "target"], name="audit_publication_unique"
            )
        ]
        indexes = [models.Index(fields=["published_at"], name="audit_publication_pending")]

    def __str__(self) -> str:
        return f"checkpoint {self.checkpoint_size} to {self.target}"


class AuditVerification(models.Model):
    """The outcome of each `verify_audit` of the database, for monitoring: /metrics shows
    the last one's result and age. Not evidence (the ledger's own checks are); a row
    here changes nothing the ledger proves."""

    ran_at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    checked = models.BigIntegerField(default=0)
    summary = models.CharField(max_length=500)

    class Meta:
        ordering = ["-ran_at"]
        get_latest_by = "ran_at"

    def __str__(self) -> str:
        return f"verify_audit at {self.ran_at:%Y-%m-%d %H:%M}: {'OK' if self.ok else 'FAIL'}"
