"""Walking the audit hash chain, in the database or in an exported JSONL file."""

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from audit.integrity import GENESIS_HASH, chain_hash, content_digest, format_timestamp
from audit.jsonl import INTEGRITY_FIELDS, SEED_KEYS, seed_fields
from audit.models import AuditChainHead, AuditEvent

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
    full_response: str
    api_key_fingerprint: str
    context: Any
    content_digest: str
    previous_hash: str
    hash: str


@dataclass(frozen=True)
class Verdict:
    checked: int
    last_sequence: int
    last_hash: str
    problem: str | None = None
    at_sequence: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        if self.ok:
            return (
                f"OK: {self.checked} events, chain intact; "
                f"last sequence {self.last_sequence}, hash {self.last_hash}"
            )
        return f"FAIL at sequence {self.at_sequence}: {self.problem}"


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

    def fail(sequence: int, problem: str) -> Verdict:
        return Verdict(checked, expected - 1, last_hash, problem, sequence)

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
        digest = content_digest(
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
        if digest != record.content_digest:
            return fail(record.sequence, "changed (content does not match its digest)")
        link = chain_hash(sequence=record.sequence, previous_hash=previous, digest=digest)
        if link != record.hash:
            return fail(record.sequence, "changed (hash does not match its sequence and digest)")
        checked += 1
        expected, previous, last_hash = record.sequence + 1, link, link
    return Verdict(checked, expected - 1, last_hash)


# --- the database --------------------------------------------------------------------

_DB_NAMES = ("sequence", "timestamp", *SEED_KEYS[1:], *INTEGRITY_FIELDS[1:])
_DB_FIELDS = ("sequence", "timestamp", *seed_fields()[1:], *INTEGRITY_FIELDS[1:])


def database_records(chunk: int = 2000) -> Iterator[Record]:
    rows = AuditEvent.objects.order_by("sequence").values_list(*_DB_FIELDS)
    for row in rows.iterator(chunk_size=chunk):
        values = dict(zip(_DB_NAMES, row, strict=True))
        values["timestamp"] = format_timestamp(values["timestamp"])
        yield Record(**values)


def verify_database() -> Verdict:
    def owner(hash_value: str) -> int | None:
        return AuditEvent.objects.filter(hash=hash_value).values_list("sequence", flat=True).first()

    verdict = verify(database_records(), owner_of_hash=owner)
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
    return verdict


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
        )
    except (TypeError, ValueError) as exc:
        raise ExportFormatError(f"line {number}: malformed integrity fields ({exc})") from None


def file_records(handle: TextIO) -> Iterator[Record]:
    for number, line in enumerate(handle, start=1):
        line = line.rstrip("\n")
        if line:
            yield parse_line(line, number)


def verify_file(handle: TextIO, *, contiguous: bool = True) -> Verdict:
    return verify(file_records(handle), contiguous=contiguous)
