"""Inclusion proofs (these events are in the log a checkpoint signed) and consistency
proofs (a later checkpoint extends an earlier one), made from the stored tree and
checked offline against signed checkpoints.

A proof file (`audit_proof`, and proofs.json in an evidence bundle) is JSON:

    {"format": "multichannel-audit-proof/1",
     "checkpoint": "<the signed checkpoint note>",
     "events": [{"sequence": 3,
                 "export_line": "<the event's `export_audit --with-integrity` line>",
                 "inclusion_proof": ["<base64 hash>", ...]}, ...]}

`inclusion_proof` is RFC 9162's PATH(sequence - 1, D[tree size]), bottom-up. The line is
kept as text: its `full_response` is hashed exactly as written. Checking an event needs
only its own line, so one person's events are proven without anyone else's.
"""

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from django.db.models import QuerySet

from audit import merkle
from audit.erasure import database_coverage, erased_shape
from audit.integrity import chain_hash
from audit.jsonl import SEED_KEYS, integrity_fields, integrity_line
from audit.models import AuditCheckpoint, AuditEvent
from audit.notes import Checkpoint, VerifierKey, open_checkpoint
from audit.tree import TileReader
from audit.verification import ExportFormatError, parse_line, record_digest, record_leaf

PROOF_FORMAT = "multichannel-audit-proof/1"


class TextSink(Protocol):
    def write(self, text: str, /) -> int: ...


class ProofFormatError(ValueError):
    """Not a proof file (or a malformed one)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _hashes(values: Any, what: str) -> list[bytes]:
    if not isinstance(values, list):
        raise ProofFormatError(f"{what} is not a list of base64 hashes")
    try:
        hashes = [base64.b64decode(value, validate=True) for value in values]
    except (TypeError, binascii.Error, ValueError):
        raise ProofFormatError(f"{what} is not a list of base64 hashes") from None
    if any(len(value) != merkle.HASH_SIZE for value in hashes):
        raise ProofFormatError(f"{what} has a hash that is not 32 bytes")
    return hashes


def inclusion_entries(
    events: QuerySet[AuditEvent], checkpoint: AuditCheckpoint
) -> Iterator[dict[str, Any]]:
    """One proof entry per event (in chain order) the checkpoint covers."""
    reader = TileReader()
    rows = (
        events.filter(sequence__lte=checkpoint.size)
        .order_by("sequence")
        .values_list(*integrity_fields())
    )
    coverage = database_coverage()
    for row in rows.iterator(chunk_size=500):
        line = integrity_line(row, coverage)
        sequence = int(row[len(SEED_KEYS)])
        proof = reader.inclusion_proof(sequence - 1, checkpoint.size)
        yield {
            "sequence": sequence,
            "export_line": line,
            "inclusion_proof": [_b64(node) for node in proof],
        }


def proof_write(handle: TextSink, checkpoint_note: str, entries: Iterable[dict[str, Any]]) -> int:
    """Stream a proof file, one event per line; how many events it holds."""
    handle.write(f'{{"format": {json.dumps(PROOF_FORMAT)},\n')
    # ASCII (\u escapes): the same text once parsed, whatever the terminal's encoding.
    handle.write(f' "checkpoint": {json.dumps(checkpoint_note)},\n "events": [')
    count = 0
    for entry in entries:
        handle.write(("\n  " if not count else ",\n  ") + json.dumps(entry))
        count += 1
    handle.write("\n ]}\n")
    return count


@dataclass(frozen=True)
class ProofVerdict:
    checked: int
    checkpoint: Checkpoint
    problem: str | None = None
    at_sequence: int | None = None
    digest_only: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        if not self.ok:
            where = f" at sequence {self.at_sequence}" if self.at_sequence is not None else ""
            return f"FAIL{where}: {self.problem}"
        text = (
            f"OK: {self.checked} events included in the log at tree size "
            f"{self.checkpoint.size} (signed checkpoint {self.checkpoint.origin}, "
            f"root {self.checkpoint.root_b64})"
        )
        if self.digest_only:
            text += (
                f"; {len(self.digest_only)} verified digest-only (content erased): "
                f"sequence {', '.join(map(str, self.digest_only))}"
            )
        return text


def proof_load(text: str) -> tuple[str, list[dict[str, Any]]]:
    """(checkpoint note, event entries) of a proof file, or ProofFormatError."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ProofFormatError(f"not a proof file: not valid JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != PROOF_FORMAT:
        raise ProofFormatError(f"not a proof file: its format is not {PROOF_FORMAT}")
    note, entries = document.get("checkpoint"), document.get("events")
    if not isinstance(note, str) or not isinstance(entries, list):
        raise ProofFormatError("not a proof file: no checkpoint or no events")
    for entry in entries:
        if not isinstance(entry, dict) or not {
            "sequence",
            "export_line",
            "inclusion_proof",
        } <= set(entry):
            raise ProofFormatError("not a proof file: an event without its line or proof")
    return note, entries


def proof_verify(text: str, key: VerifierKey) -> ProofVerdict:
    """Check a proof file offline: the checkpoint's signature (SignatureError), then
    each event's content against its digest and its inclusion proof against the
    signed root. Malformed input raises ProofFormatError or NoteFormatError."""
    note, entries = proof_load(text)
    checkpoint = open_checkpoint(note, key)
    digest_only: list[int] = []
    for number, entry in enumerate(entries, start=1):
        try:
            record = parse_line(str(entry["export_line"]), number)
        except ExportFormatError as exc:
            raise ProofFormatError(f"event {number}: {exc}") from None
        path = _hashes(entry["inclusion_proof"], f"event {number}'s inclusion proof")

        def fail(problem: str, done: int = number - 1, at: int = record.sequence) -> ProofVerdict:
            return ProofVerdict(done, checkpoint, problem, at, tuple(digest_only))

        if entry["sequence"] != record.sequence:
            return fail(f"the proof is for sequence {entry['sequence']}, the line is not")
        digest = record_digest(record)
        if digest != record.content_digest:
            # An erased event names the event that erased it; a proof of one event
            # cannot show that event (prove it too), so its word is noted, not checked.
            if record.erased_by is None or not erased_shape(record.context, record.full_response):
                return fail("changed (content does not match its digest)")
            digest = record.content_digest
            digest_only.append(record.sequence)
        link = chain_hash(
            sequence=record.sequence, previous_hash=record.previous_hash, digest=digest
        )
        if link != record.hash:
            return fail("changed (hash does not match its sequence and digest)")
        if record.sequence > checkpoint.size:
            return fail(f"not in the log at the checkpoint (its tree size is {checkpoint.size})")
        leaf = record_leaf(record)
        if not merkle.verify_inclusion(
            record.sequence - 1, checkpoint.size, leaf, path, checkpoint.root
        ):
            return fail(
                "not in the log at the checkpoint (the inclusion proof does not lead to its "
                "signed root)"
            )
    return ProofVerdict(len(entries), checkpoint, digest_only=tuple(digest_only))


# --- consistency ----------------------------------------------------------------------


def consistency_from_database(old_size: int, new_size: int) -> list[bytes]:
    """From the stored tree (TreeUnavailableError when it does not reach new_size)."""
    return TileReader().consistency_proof(old_size, new_size)


def consistency_problem(old: Checkpoint, new: Checkpoint, proof: list[bytes]) -> str | None:
    """Why NEW does not extend OLD, or None when it does."""
    if old.origin != new.origin:
        return f"origin: the checkpoints are of different logs ({old.origin}, {new.origin})"
    if new.size < old.size:
        return (
            f"size: NEW ({new.size} events) is smaller than OLD ({old.size}): it cannot extend it"
        )
    if not merkle.verify_consistency(old.size, new.size, old.root, new.root, proof):
        return (
            f"consistency: the log at tree size {new.size} does not extend the log at tree "
            f"size {old.size} (the proof does not match their signed roots)"
        )
    return None


def consistency_document(new: AuditCheckpoint, older: Iterable[AuditCheckpoint]) -> dict[str, Any]:
    """consistency.json of a bundle: a proof from each older checkpoint to `new`."""
    reader = TileReader()
    return {
        "format": "multichannel-audit-consistency/1",
        "new_size": new.size,
        "proofs": [
            {
                "old_size": old.size,
                "proof": [_b64(node) for node in reader.consistency_proof(old.size, new.size)],
            }
            for old in older
            if 0 < old.size < new.size
        ],
    }


def consistency_lookup(text: str, old_size: int, new_size: int) -> list[bytes]:
    """The proof from old_size to new_size in a bundle's consistency.json."""
    try:
        document = json.loads(text)
        leads_to = document["new_size"]
        found = [e["proof"] for e in document["proofs"] if e["old_size"] == old_size]
    except (ValueError, KeyError, TypeError):
        raise ProofFormatError("not a bundle's consistency.json") from None
    if leads_to != new_size:
        raise ProofFormatError(
            f"the bundle's consistency proofs lead to tree size {leads_to}, not {new_size}"
        )
    if old_size in (0, new_size):
        return []
    if found:
        return _hashes(found[0], "the consistency proof")
    raise ProofFormatError(f"the bundle has no consistency proof from {old_size} to {new_size}")
