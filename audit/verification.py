"""Walking the audit hash chain, in the database or in an exported JSONL file, and
checking it against a signed checkpoint (its Merkle root at the checkpoint's size)."""

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TextIO

from django.db import DatabaseError, transaction
from django.db.models import F

from audit import merkle
from audit.erasure import Coverage, erased_shape
from audit.integrity import GENESIS_HASH, chain_hash, content_digest, format_timestamp
from audit.jsonl import ERASED_KEY, INTEGRITY_FIELDS, SEED_KEYS
from audit.models import AuditChainHead, AuditEvent, AuditVerification
from audit.notes import Checkpoint
from audit.tree import TileReader, TreeUnavailableError

logger = logging.getLogger(__name__)

_FULL_RESPONSE = ',"full_response":'


@dataclass(frozen=True)
class Record:
    sequence: int
    timestamp: str
    channel: str
    action: str
    end_user_id: str
    response_id: str | None
    conversation_id: str | None
    previous_response_id: str | None
    # The exact JSON text as stored ("null" when there is none, or it was erased).
    full_response: str
    api_key_fingerprint: str
    context: Any
    content_digest: str
    previous_hash: str
    hash: str
    # What an export line says erased this event's content (audit/erasure.py).
    erased_by: int | None = None


def record_digest(record: Record) -> str:
    """The event's content digest recomputed from its content."""
    return content_digest(
        timestamp=record.timestamp,
        channel=record.channel,
        action=record.action,
        end_user_id=record.end_user_id,
        response_id=record.response_id,
        conversation_id=record.conversation_id,
        previous_response_id=record.previous_response_id,
        full_response=record.full_response,
        api_key_fingerprint=record.api_key_fingerprint,
        context=record.context,
    )


def record_leaf(record: Record) -> bytes:
    """The event's Merkle leaf hash (a malformed digest gives a hash no leaf has)."""
    try:
        return merkle.event_leaf_hash(record.sequence, record.content_digest)
    except ValueError:
        return bytes(merkle.HASH_SIZE)


@dataclass(frozen=True)
class Verdict:
    checked: int
    last_sequence: int
    last_hash: str
    problem: str | None = None
    at_sequence: int | None = None
    digest_only: tuple[int, ...] = ()
    # Set once the log was found to have this signed checkpoint's root.
    checkpoint: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        if not self.ok:
            where = f" at sequence {self.at_sequence}" if self.at_sequence is not None else ""
            return f"FAIL{where}: {self.problem}"
        lines = []
        if self.checkpoint is not None:
            lines.append(
                f"OK: the log's first {self.checkpoint.size} events have the signed "
                f"checkpoint's root {self.checkpoint.root_b64} ({self.checkpoint.origin})"
            )
        summary = (
            f"OK: {self.checked} events, chain intact; "
            f"last sequence {self.last_sequence}, hash {self.last_hash}"
        )
        if self.digest_only:
            shown = ", ".join(map(str, self.digest_only[:10]))
            more = ", ..." if len(self.digest_only) > 10 else ""
            summary += (
                f"; {len(self.digest_only)} verified digest-only (content erased): "
                f"sequence {shown}{more}"
            )
        lines.append(summary)
        return "\n".join(lines)


class ExportFormatError(ValueError):
    pass


def verify(
    records: Iterable[Record],
    *,
    contiguous: bool = True,
    owner_of_hash: Callable[[str], int | None] = lambda _hash: None,
) -> Verdict:
    """Re-walk the chain: every event's content must match its digest, its hash must
    match its sequence, predecessor and digest, and (when `contiguous`) sequences must
    run 1, 2, 3, ... with each event chained to the one before."""
    expected, previous, checked = 1, GENESIS_HASH, 0
    last_hash = GENESIS_HASH
    digest_only: list[int] = []
    # Events whose content is gone, waiting for the erasure or retention event (later
    # in the log) that says why: (sequence, end user, timestamp, what the line claims).
    erased: list[tuple[int, str, str, int | None]] = []
    coverage = Coverage()

    def fail(sequence: int, problem: str) -> Verdict:
        return Verdict(checked, expected - 1, last_hash, problem, sequence, tuple(digest_only))

    for record in records:
        if record.sequence < expected:
            return fail(record.sequence, f"reordered or duplicated (expected {expected} next)")
        if record.sequence > expected:
            if contiguous:
                return fail(
                    expected, f"missing or out of order (found sequence {record.sequence} next)"
                )
            previous = record.previous_hash  # a filtered export: cannot check this link
        if record.previous_hash != previous:
            owner = owner_of_hash(record.previous_hash)
            if owner is not None:
                return fail(record.sequence, f"reordered (it was chained after sequence {owner})")
            return fail(record.sequence, "chain broken (previous hash does not match)")
        digest = record_digest(record)
        if digest != record.content_digest:
            if not erased_shape(record.context, record.full_response):
                return fail(record.sequence, "changed (content does not match its digest)")
            # Erased: the digest cannot be recomputed; the chain and the tree commit to
            # the stored one. Why it was erased is checked once the log is read.
            erased.append((record.sequence, record.end_user_id, record.timestamp, record.erased_by))
            digest = record.content_digest
            digest_only.append(record.sequence)
        link = chain_hash(sequence=record.sequence, previous_hash=previous, digest=digest)
        if link != record.hash:
            return fail(record.sequence, "changed (hash does not match its sequence and digest)")
        coverage.note(
            sequence=record.sequence,
            action=record.action,
            end_user_id=record.end_user_id,
            context=record.context,
        )
        checked += 1
        expected, previous, last_hash = record.sequence + 1, link, link
    for sequence, end_user_id, timestamp, claimed in erased:
        by = coverage.covering(sequence=sequence, end_user_id=end_user_id, timestamp=timestamp)
        if by is None and (contiguous or claimed is None):
            # A filtered export may leave the erasure event out; it must still say which.
            return Verdict(
                checked,
                expected - 1,
                last_hash,
                "changed (its content is gone, and no erasure or retention event says why)",
                sequence,
                tuple(digest_only),
            )
        if by is not None and claimed is not None and claimed != by:
            return Verdict(
                checked,
                expected - 1,
                last_hash,
                f"changed (it says erasure event {claimed} erased it; the log says {by})",
                sequence,
                tuple(digest_only),
            )
    return Verdict(checked, expected - 1, last_hash, digest_only=tuple(digest_only))


class _RootTap:
    """Passes records through while computing the Merkle root of the first `size`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.builder = merkle.RootBuilder()
        self.root: bytes | None = merkle.EMPTY_ROOT if size == 0 else None

    def __call__(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            if self.builder.size < self.size:
                self.builder.push(record_leaf(record))
                if self.builder.size == self.size:
                    self.root = self.builder.root()
            yield record


def first_difference(records: Iterable[Record], checkpoint: Checkpoint) -> int | None:
    """Which event differs from what the checkpoint signed, if the stored tree still
    has the checkpoint's root (then its leaves are the signed ones); None otherwise."""
    reader = TileReader()
    try:
        if reader.root(checkpoint.size) != checkpoint.root:
            return None
        for record, signed in zip(records, reader.leaf_hashes(checkpoint.size), strict=False):
            if record_leaf(record) != signed:
                return record.sequence
    except TreeUnavailableError:
        return None
    return None


def _against_checkpoint(
    verdict: Verdict,
    tap: _RootTap,
    checkpoint: Checkpoint,
    records: Callable[[], Iterable[Record]],
) -> Verdict:
    """After the chain verified: the log must reach the checkpoint's size and have its
    root there. A chain rewritten from scratch, every hash recomputed, fails here."""
    if not verdict.ok:
        return verdict
    if tap.root is None:
        return replace(
            verdict,
            problem=f"size: the log holds {verdict.last_sequence} events, the checkpoint "
            f"covers {checkpoint.size} (events from sequence {verdict.last_sequence + 1} "
            "on are missing)",
        )
    if tap.root != checkpoint.root:
        first = first_difference(records(), checkpoint)
        where = (
            f"; sequence {first} is the first event that differs from what was signed"
            if first is not None
            else ""
        )
        return replace(
            verdict,
            problem=f"root: the log's first {checkpoint.size} events do not have the "
            f"checkpoint's root {checkpoint.root_b64}{where}",
        )
    return replace(verdict, checkpoint=checkpoint)


# --- the database --------------------------------------------------------------------

_DB_NAMES = ("sequence", "timestamp", *SEED_KEYS[1:], *INTEGRITY_FIELDS[1:], "body_id")
_DB_FIELDS = (
    "sequence",
    "timestamp",
    *SEED_KEYS[1:-1],
    F("body__text"),  # None when there is no body, or when it was erased
    *INTEGRITY_FIELDS[1:],
    "body_id",
)


def database_records(chunk: int = 2000) -> Iterator[Record]:
    rows = AuditEvent.objects.order_by("sequence").values_list(*_DB_FIELDS)
    for row in rows.iterator(chunk_size=chunk):
        values = dict(zip(_DB_NAMES, row, strict=True))
        values["timestamp"] = format_timestamp(values["timestamp"])
        values.pop("body_id")
        if values["full_response"] is None:
            # No body, or one erased: the text is JSON null (a body deleted without an
            # erasure then fails as changed).
            values["full_response"] = "null"
        yield Record(**values)


def verify_database(checkpoint: Checkpoint | None = None) -> Verdict:
    """The chain in the database, up to its head; with a (verified) checkpoint, also
    its Merkle root at the checkpoint's size."""

    def owner(hash_value: str) -> int | None:
        return AuditEvent.objects.filter(hash=hash_value).values_list("sequence", flat=True).first()

    tap = _RootTap(checkpoint.size if checkpoint else 0)
    verdict = verify(tap(database_records()), owner_of_hash=owner)
    if not verdict.ok:
        return verdict
    head = AuditChainHead.objects.filter(pk=1).first()
    head_sequence, head_hash = (head.sequence, head.hash) if head else (0, GENESIS_HASH)
    if (head_sequence, head_hash) != (verdict.last_sequence, verdict.last_hash):
        return Verdict(
            verdict.checked,
            verdict.last_sequence,
            verdict.last_hash,
            f"missing (the chain head is at sequence {head_sequence}, "
            f"the last event is {verdict.last_sequence})",
            verdict.last_sequence + 1,
        )
    if checkpoint is not None:
        return _against_checkpoint(verdict, tap, checkpoint, database_records)
    return verdict


def verification_note(verdict: Verdict) -> None:
    """Keep the outcome of a database verification for monitoring (/metrics). A
    database that cannot take the note does not change the verdict."""
    try:
        with transaction.atomic():
            AuditVerification.objects.create(
                ok=verdict.ok, checked=verdict.checked, summary=verdict.describe()[:500]
            )
    except DatabaseError:
        logger.warning("could not note the result of verify_audit", exc_info=True)


# --- an exported file ----------------------------------------------------------------


def parse_line(line: str, number: int) -> Record:
    """One line of `export_audit --with-integrity`. `full_response` is taken as the
    exact text in the line, since the digest covers the text as stored."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ExportFormatError(f"line {number}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or tuple(data)[: len(SEED_KEYS)] != SEED_KEYS:
        raise ExportFormatError(f"line {number}: not an audit export line")
    # Earlier values are JSON strings, in which a quote is always escaped, so the first
    # occurrence of this key is the key itself.
    start = line.index(_FULL_RESPONSE) + len(_FULL_RESPONSE)
    _, end = json.JSONDecoder().raw_decode(line, start)
    missing = [key for key in INTEGRITY_FIELDS if key not in data]
    if missing:
        raise ExportFormatError(
            f"line {number}: no integrity fields ({', '.join(missing)}); "
            "export with `export_audit --with-integrity`"
        )
    try:
        return Record(
            sequence=int(data["sequence"]),
            timestamp=str(data["timestamp"]),
            channel=data["channel"],
            action=data["action"],
            end_user_id=data["end_user_id"],
            response_id=data["response_id"],
            conversation_id=data["conversation_id"],
            previous_response_id=data["previous_response_id"],
            full_response=line[start:end],
            api_key_fingerprint=data["api_key_fingerprint"],
            context=data["context"],
            content_digest=data["content_digest"],
            previous_hash=data["previous_hash"],
            hash=data["hash"],
            erased_by=int(data[ERASED_KEY]) if data.get(ERASED_KEY) is not None else None,
        )
    except (TypeError, ValueError) as exc:
        raise ExportFormatError(f"line {number}: malformed integrity fields ({exc})") from None


def file_records(handle: TextIO) -> Iterator[Record]:
    for number, line in enumerate(handle, start=1):
        line = line.rstrip("\n")
        if line:
            yield parse_line(line, number)


def verify_file(
    handle: TextIO, *, contiguous: bool = True, checkpoint: Checkpoint | None = None
) -> Verdict:
    """An export, offline; with a (verified) checkpoint, also its Merkle root (which
    needs the complete export: `contiguous`)."""
    if checkpoint is None:
        return verify(file_records(handle), contiguous=contiguous)
    if not contiguous:
        raise ValueError("a checkpoint's root needs the complete export")
    start = handle.tell()
    tap = _RootTap(checkpoint.size)
    verdict = verify(tap(file_records(handle)))

    def again() -> Iterator[Record]:
        handle.seek(start)
        return file_records(handle)

    return _against_checkpoint(verdict, tap, checkpoint, again)
