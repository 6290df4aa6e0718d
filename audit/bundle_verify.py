#!/usr/bin/env python3
"""Verify a Multichannel audit evidence bundle on your own machine.

    python3 -m venv /tmp/verify-env && /tmp/verify-env/bin/pip install cryptography
    /tmp/verify-env/bin/python verify.py [--pubkey KEY|FILE] [--checkpoint FILE ...]

Needs Python 3.10+ and the `cryptography` package, nothing else: it does not import
the code of the system that made the bundle. It re-implements, from their published
definitions (README.md beside it), the signed-note and checkpoint formats
(c2sp.org/signed-note, c2sp.org/tlog-checkpoint), RFC 9162 Merkle hashing and
proofs, and the ledger's content digests and hash chain.

Prints what it checked and OK (exit 0), or FAIL and exactly what is wrong (exit 1), or
ERROR when the input cannot be checked at all (exit 2).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64
EMPTY_ROOT = hashlib.sha256(b"").digest()
SEED_KEYS = (
    "timestamp",
    "channel",
    "action",
    "end_user_id",
    "response_id",
    "conversation_id",
    "previous_response_id",
    "full_response",
)
ERASED_KEY = "erased_by"
# Events that record compliance itself: their content is never erased.
COMPLIANCE_ACTIONS = frozenset(
    {"erasure", "retention", "legal_hold.add", "legal_hold.remove"}
    | {
        f"{op}{tail}"
        for op in (
            "responses.delete",
            "conversations.items.list",
            "conversations.items.delete",
            "conversations.delete",
            "files.delete",
            "speech.transcriptions.list",
            "speech.transcriptions.delete",
        )
        for tail in ("", ".failed")
    }
)


class Failure(Exception):
    """The evidence does not hold."""


class Unusable(Exception):
    """The input cannot be checked at all."""


def b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Unusable(f"{what} is not valid base64") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- signed notes and checkpoints --------------------------------------------------------


@dataclass(frozen=True)
class PublicKey:
    name: str
    key_id: bytes
    raw: bytes

    @property
    def text(self) -> str:
        encoded = b64(b"\x01" + self.raw)
        return f"{self.name}+{self.key_id.hex()}+{encoded}"


def parse_public_key(text: str) -> PublicKey:
    # name + 8 hex digits + base64(0x01 || 32-byte Ed25519 key); the key id is
    # SHA-256(name || 0x0A || 0x01 || key)[:4].
    parts = text.strip().split("+", 2)
    if len(parts) != 3 or not re.fullmatch(r"[^\s+]+", parts[0]):
        raise Unusable("the public key is not of the form name+keyid+base64key")
    name, hex_id, encoded = parts
    data = b64decode(encoded, "the public key")
    if not re.fullmatch(r"[0-9a-f]{8}", hex_id) or len(data) != 33 or data[0] != 1:
        raise Unusable("the public key is not an Ed25519 note verifier key")
    key_id = hashlib.sha256(name.encode() + b"\n" + data).digest()[:4]
    if key_id.hex() != hex_id:
        raise Unusable("the public key's key id does not match its name and key")
    return PublicKey(name, key_id, data[1:])


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    note: str


def open_checkpoint(note: str, key: PublicKey, what: str) -> Checkpoint:
    split = note.rfind("\n\n")
    if not note.endswith("\n") or split < 0:
        raise Unusable(f"{what} is not a signed note")
    text, signatures = note[: split + 1], note[split + 2 :].splitlines()
    lines = text.split("\n")
    if len(lines) < 4 or any(not line for line in lines[:-1]):
        raise Unusable(f"{what} is not a checkpoint")
    if not re.fullmatch(r"0|[1-9][0-9]*", lines[1]):
        raise Unusable(f"{what} has no tree size")
    root = b64decode(lines[2], f"{what}'s root hash")
    if len(root) != 32:
        raise Unusable(f"{what}'s root hash is not 32 bytes")
    verified = False
    for line in signatures:
        match = re.fullmatch("\u2014 (\\S+) (\\S+)", line)
        if match is None:
            raise Unusable(f"{what} has a malformed signature line")
        data = b64decode(match.group(2), f"{what}'s signature")
        if match.group(1) != key.name or data[:4] != key.key_id:
            continue  # another key (a witness's cosignature, say): ignored
        try:
            Ed25519PublicKey.from_public_bytes(key.raw).verify(data[4:], text.encode())
        except InvalidSignature:
            raise Failure(f"signature: {what} is not validly signed by {key.name}") from None
        verified = True
    if not verified:
        raise Failure(f"signature: {what} is not signed by the key {key.text}")
    return Checkpoint(lines[0], int(lines[1]), root, note)


# --- RFC 9162 Merkle tree ------------------------------------------------------------------


def leaf_hash(sequence: int, content_digest: str) -> bytes:
    # leaf data = sequence (8 bytes, big-endian) || the 32 bytes of the content digest
    try:
        digest = bytes.fromhex(content_digest)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        return bytes(32)  # no event has this leaf
    return hashlib.sha256(b"\x00" + sequence.to_bytes(8, "big") + digest).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class RootBuilder:
    def __init__(self) -> None:
        self.size = 0
        self.edge: list[bytes] = []

    def push(self, leaf: bytes) -> None:
        self.edge.append(leaf)
        self.size += 1
        size = self.size
        while size % 2 == 0:
            right = self.edge.pop()
            self.edge[-1] = node_hash(self.edge[-1], right)
            size //= 2

    def root(self) -> bytes:
        if not self.edge:
            return EMPTY_ROOT
        root = self.edge[-1]
        for left in reversed(self.edge[:-1]):
            root = node_hash(left, root)
        return root


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    # RFC 9162, 2.1.3.2
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> bool:
    # RFC 9162, 2.1.4.2 (an empty old tree is consistent with every tree)
    if old == 0:
        return not proof and old_root == EMPTY_ROOT
    if old == new:
        return not proof and old_root == new_root
    if not 0 < old < new or not proof:
        return False
    path = ([old_root] if old & (old - 1) == 0 else []) + list(proof)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == old_root and sr == new_root and sn == 0


def hashes(values: object, what: str) -> list[bytes]:
    if not isinstance(values, list):
        raise Unusable(f"{what} is not a list of hashes")
    out = [b64decode(str(value), what) for value in values]
    if any(len(value) != 32 for value in out):
        raise Unusable(f"{what} has a hash that is not 32 bytes")
    return out


# --- the ledger's events -----------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    sequence: int
    digest: str  # recomputed from the content, or the stored one if the content was erased
    stored_digest: str
    previous_hash: str
    hash: str
    erased: bool  # its content is gone (no context, "full_response":null, digest differs)
    erased_by: int | None  # the erasure or retention event the line says removed it
    action: str
    end_user_id: str
    timestamp: str
    context: object
    line: str


def parse_event(line: str, where: str) -> Event:
    try:
        data = json.loads(line)
    except ValueError:
        raise Unusable(f"{where}: not valid JSON") from None
    if not isinstance(data, dict) or tuple(data)[: len(SEED_KEYS)] != SEED_KEYS:
        raise Unusable(f"{where}: not an audit export line")
    try:
        # full_response is hashed as the exact text in the line: find it after the
        # seven string (or null) values before it, whose quotes are always escaped.
        start = line.index(',"full_response":') + len(',"full_response":')
        _, end = json.JSONDecoder().raw_decode(line, start)
        context = data["context"]
        fields = [
            data["timestamp"],
            data["channel"],
            data["action"],
            data["end_user_id"],
            data["response_id"],
            data["conversation_id"],
            data["previous_response_id"],
            data["api_key_fingerprint"],
            json.dumps(context or {}, ensure_ascii=False, separators=(",", ":"), sort_keys=True),
        ]
        claimed = data.get(ERASED_KEY)
        erased_by = None if claimed is None else int(claimed)
        sequence = int(data["sequence"])
        stored = str(data["content_digest"])
        previous_hash, link = str(data["previous_hash"]), str(data["hash"])
    except (KeyError, TypeError, ValueError):
        raise Unusable(f"{where}: no integrity fields") from None
    canonical = (
        json.dumps(fields, ensure_ascii=False, separators=(",", ":")) + "\n" + line[start:end]
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    # An erased event: its content (context, body) is gone, so its digest cannot be
    # recomputed; the chain and the tree commit to the stored one. Why it is gone is
    # checked against the log's erasure and retention events (Coverage).
    erased = (
        digest != stored
        and context in (None, {})
        and line[start:end] == "null"
        and data["action"] not in COMPLIANCE_ACTIONS
    )
    return Event(
        sequence,
        stored if erased else digest,
        stored,
        previous_hash,
        link,
        erased,
        erased_by,
        str(data["action"]),
        str(data["end_user_id"]),
        str(data["timestamp"]),
        context,
        line,
    )


class Coverage:
    """The erasure and retention events seen: an event whose content is gone must be
    covered by one later in the log (README.md, "Erased events")."""

    def __init__(self) -> None:
        self.erasures: dict[str, int] = {}
        self.retentions: list[tuple[int, str]] = []
        self.erased: list[Event] = []

    def note(self, event: Event) -> None:
        if event.erased:
            self.erased.append(event)
        if event.action == "erasure" and event.end_user_id:
            self.erasures[event.end_user_id] = max(
                event.sequence, self.erasures.get(event.end_user_id, 0)
            )
        elif event.action == "retention" and isinstance(event.context, dict):
            cutoff = event.context.get("cutoff")
            if isinstance(cutoff, str):
                self.retentions.append((event.sequence, cutoff))

    def covering(self, event: Event) -> int | None:
        erasure = self.erasures.get(event.end_user_id)
        if erasure is not None and erasure > event.sequence:
            return erasure
        for sequence, cutoff in self.retentions:
            if sequence > event.sequence and event.timestamp < cutoff:
                return sequence
        return None

    def check(self, complete: bool, say: list[str]) -> None:
        """Every erased event is covered (a filtered export may leave the erasure event
        out, but its line must then name it); says which were verified digest-only."""
        for event in self.erased:
            by = self.covering(event)
            if by is None and (complete or event.erased_by is None):
                raise Failure(
                    f"at sequence {event.sequence}: changed (its content is gone, and no "
                    "erasure or retention event says why)"
                )
            if by is not None and event.erased_by is not None and by != event.erased_by:
                raise Failure(
                    f"at sequence {event.sequence}: changed (it says event {event.erased_by} "
                    f"erased it; the log says {by})"
                )
        if self.erased:
            say.append(
                f"note {len(self.erased)} events verified digest-only (content erased, each "
                "covered by an erasure or retention event): sequence "
                + ", ".join(str(event.sequence) for event in self.erased)
            )


def chain_hash(sequence: int, previous_hash: str, digest: str) -> str:
    return hashlib.sha256(f"{sequence}:{previous_hash}:{digest}".encode()).hexdigest()


def check_event(event: Event) -> None:
    """The event's content matches its digest, and its hash its sequence, predecessor
    and digest."""
    if event.digest != event.stored_digest:
        raise Failure(f"at sequence {event.sequence}: changed (content does not match its digest)")
    if chain_hash(event.sequence, event.previous_hash, event.digest) != event.hash:
        raise Failure(
            f"at sequence {event.sequence}: changed (hash does not match its sequence and digest)"
        )


def export_events(path: Path) -> Iterator[Event]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if line:
                yield parse_event(line, f"{path.name} line {number}")


# --- the bundle ----------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_manifest(bundle: Path, say: list[str]) -> set[str]:
    """Every file the MANIFEST lists is there, unchanged; the names it lists (only
    those are read from here on)."""
    manifest = bundle / "MANIFEST"
    if not manifest.is_file():
        raise Unusable(f"{bundle} has no MANIFEST: is it an evidence bundle?")
    listed = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"([0-9a-f]{64})  (\S+)", line)
        if match is None:
            raise Unusable(f"MANIFEST has a malformed line: {line!r}")
        listed[match.group(2)] = match.group(1)
    for name, digest in sorted(listed.items()):
        path = bundle / name
        if not path.is_file():
            raise Failure(f"MANIFEST: {name} is missing")
        if sha256_file(path) != digest:
            raise Failure(f"MANIFEST: {name} was changed (its SHA-256 differs)")
    say.append(f"ok   MANIFEST: {len(listed)} files, every SHA-256 matches")
    return set(listed)


def read_checkpoints(
    bundle: Path, listed: set[str], key: PublicKey, say: list[str]
) -> list[Checkpoint]:
    checkpoints = []
    names = sorted(n for n in listed if re.fullmatch(r"checkpoints/checkpoint-\d+\.txt", n))
    for path in (bundle / name for name in names):
        checkpoint = open_checkpoint(path.read_text(encoding="utf-8"), key, path.name)
        if path.name != f"checkpoint-{checkpoint.size:012d}.txt":
            raise Failure(f"{path.name} holds the checkpoint at tree size {checkpoint.size}")
        checkpoints.append(checkpoint)
        token = path.with_suffix(".tsr")
        if f"checkpoints/{token.name}" in listed and hashlib.sha256(
            checkpoint.note.encode()
        ).digest() not in (token.read_bytes()):
            raise Failure(f"{token.name} is not a time-stamp of {path.name}")
    if not checkpoints:
        raise Unusable("the bundle has no checkpoint")
    if len({c.origin for c in checkpoints}) != 1:
        raise Failure("the checkpoints name different logs (origins)")
    tokens = sum(1 for name in listed if name.endswith(".tsr"))
    say.append(
        f"ok   {len(checkpoints)} checkpoints of {checkpoints[0].origin}, tree sizes "
        f"{checkpoints[0].size} to {checkpoints[-1].size}, each signed by {key.name}"
        + (f"; {tokens} RFC 3161 time-stamp tokens over them (imprints match)" if tokens else "")
    )
    return checkpoints


def check_consistency(bundle: Path, checkpoints: list[Checkpoint], say: list[str]) -> None:
    latest = checkpoints[-1]
    try:
        document = json.loads((bundle / "consistency.json").read_text(encoding="utf-8"))
        proofs = {entry["old_size"]: entry["proof"] for entry in document["proofs"]}
        leads_to = document["new_size"]
    except (OSError, ValueError, KeyError, TypeError):
        raise Unusable("consistency.json is missing or malformed") from None
    if leads_to != latest.size:
        raise Failure(f"consistency.json leads to tree size {leads_to}, not {latest.size}")
    for old in checkpoints[:-1]:
        proof = [] if old.size == 0 else hashes(proofs.get(old.size), "a consistency proof")
        if not verify_consistency(old.size, latest.size, old.root, latest.root, proof):
            raise Failure(
                f"consistency: the log at tree size {latest.size} does not extend the "
                f"checkpoint at tree size {old.size}"
            )
    say.append(f"ok   the latest checkpoint (tree size {latest.size}) extends every earlier one")


def check_complete_export(
    bundle: Path, checkpoints: list[Checkpoint], held: list[Checkpoint], say: list[str]
) -> None:
    latest = checkpoints[-1]
    wanted: dict[int, list[Checkpoint]] = {}
    for checkpoint in checkpoints + held:
        wanted.setdefault(checkpoint.size, []).append(checkpoint)
    builder, previous, coverage = RootBuilder(), GENESIS, Coverage()
    for checkpoint in wanted.get(0, []):
        if checkpoint.root != EMPTY_ROOT:
            raise Failure("root: a checkpoint of the empty log has a root that is not empty")
    for event in export_events(bundle / "export.jsonl"):
        expected = builder.size + 1
        if event.sequence != expected:
            raise Failure(
                f"at sequence {expected}: missing or out of order in export.jsonl "
                f"(found sequence {event.sequence} next)"
            )
        if event.previous_hash != previous:
            raise Failure(f"at sequence {event.sequence}: chain broken (previous hash differs)")
        check_event(event)
        coverage.note(event)
        builder.push(leaf_hash(event.sequence, event.stored_digest))
        previous = event.hash
        for checkpoint in wanted.get(builder.size, []):
            if builder.root() != checkpoint.root:
                raise Failure(
                    f"root: the first {builder.size} events of export.jsonl do not have the "
                    f"signed root of the checkpoint at tree size {builder.size}"
                )
    if builder.size != latest.size:
        raise Failure(
            f"size: export.jsonl holds {builder.size} events, the latest checkpoint covers "
            f"{latest.size}"
        )
    say.append(
        f"ok   export.jsonl: all {builder.size} events, chain intact, and the Merkle root of "
        f"the log at every checkpoint's size is the signed one"
    )
    coverage.check(complete=True, say=say)


def check_filtered_export(bundle: Path, latest: Checkpoint, say: list[str]) -> None:
    try:
        document = json.loads((bundle / "proofs.json").read_text(encoding="utf-8"))
        note, entries = document["checkpoint"], document["events"]
        proofs = {str(entry["export_line"]): entry["inclusion_proof"] for entry in entries}
    except (OSError, ValueError, KeyError, TypeError):
        raise Unusable("proofs.json is missing or malformed") from None
    if note != latest.note:
        raise Failure("proofs.json is not against the latest checkpoint")
    count, coverage = 0, Coverage()
    for event in export_events(bundle / "export.jsonl"):
        check_event(event)
        coverage.note(event)
        if event.sequence > latest.size:
            raise Failure(
                f"at sequence {event.sequence}: beyond the latest checkpoint ({latest.size})"
            )
        if event.line not in proofs:
            raise Failure(f"at sequence {event.sequence}: export.jsonl has it, proofs.json not")
        proof = hashes(proofs.pop(event.line), "an inclusion proof")
        leaf = leaf_hash(event.sequence, event.stored_digest)
        if not verify_inclusion(event.sequence - 1, latest.size, leaf, proof, latest.root):
            raise Failure(
                f"at sequence {event.sequence}: not in the log at tree size {latest.size} "
                "(the inclusion proof does not lead to the signed root)"
            )
        count += 1
    if proofs:
        raise Failure(f"proofs.json proves {len(proofs)} events that export.jsonl does not hold")
    say.append(
        f"ok   export.jsonl: {count} events (a filtered export), each proven included in the "
        f"log at tree size {latest.size}"
    )
    coverage.check(complete=False, say=say)


def check_held(held: list[Checkpoint], checkpoints: list[Checkpoint], complete: bool) -> list[str]:
    """Checkpoints the auditor kept from earlier: the bundle's log must extend each."""
    latest, by_size = checkpoints[-1], {c.size: c for c in checkpoints}
    said = []
    for mine in held:
        if mine.origin != latest.origin:
            raise Failure(f"your checkpoint is of another log ({mine.origin})")
        if mine.size > latest.size:
            raise Failure(
                f"your checkpoint (tree size {mine.size}) is newer than the bundle's latest "
                f"({latest.size}): the log was truncated, or the bundle is older than it"
            )
        ours = by_size.get(mine.size)
        if ours is not None and ours.root != mine.root:
            raise Failure(
                f"root: your checkpoint and the bundle's sign two different roots for tree "
                f"size {mine.size}: the log was rewritten"
            )
        if ours is None and not complete:
            raise Unusable(
                f"your checkpoint (tree size {mine.size}) is not in this filtered bundle; "
                "ask for a complete one (or one that includes it)"
            )
        # (With a complete export, its root at that size was compared on the way.)
        said.append(f"ok   your checkpoint at tree size {mine.size} is extended by this log")
    return said


def verify_bundle(bundle: Path, pubkey: str | None, held_paths: list[Path]) -> list[str]:
    say: list[str] = []
    listed = check_manifest(bundle, say)
    if pubkey is None:
        key = parse_public_key((bundle / "public-key.txt").read_text(encoding="utf-8"))
        say.append(
            f"key  {key.text} (from public-key.txt: compare it with the key you were "
            "given, or pass it with --pubkey)"
        )
    else:
        path = Path(pubkey)
        key = parse_public_key(path.read_text(encoding="utf-8") if path.is_file() else pubkey)
        say.append(f"key  {key.text} (yours)")
    checkpoints = read_checkpoints(bundle, listed, key, say)
    check_consistency(bundle, checkpoints, say)
    held = [open_checkpoint(p.read_text(encoding="utf-8"), key, str(p)) for p in held_paths]
    complete = "proofs.json" not in listed
    if complete:
        check_complete_export(bundle, checkpoints, held, say)
    else:
        check_filtered_export(bundle, checkpoints[-1], say)
    say.extend(check_held(held, checkpoints, complete))
    return say


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify an audit evidence bundle.")
    parser.add_argument(
        "--bundle", type=Path, default=Path(__file__).resolve().parent,
        help="the unpacked bundle (default: this file's directory)",
    )  # fmt: skip
    parser.add_argument("--pubkey", help="the log's public key (name+keyid+base64) or a file")
    parser.add_argument(
        "--checkpoint", type=Path, action="append", default=[],
        help="a checkpoint you kept earlier: check that this log extends it (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        for line in verify_bundle(args.bundle, args.pubkey, args.checkpoint):
            print(line)
    except Failure as exc:
        print(f"FAIL: {exc}")
        return 1
    except (Unusable, OSError, UnicodeDecodeError) as exc:
        print(f"ERROR: {exc}")
        return 2
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
