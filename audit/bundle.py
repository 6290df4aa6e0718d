"""The evidence bundle: everything an auditor needs to check a selection of the ledger
on their own machine, in one zip (see BUNDLE_README below for what is in it)."""

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import IO
from zipfile import ZIP_DEFLATED, ZipFile, ZipInfo

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from audit.checkpoints import checkpoint_latest, signing_key
from audit.erasure import database_coverage
from audit.jsonl import integrity_fields, integrity_line
from audit.models import AuditCheckpoint, AuditCheckpointTimestamp, AuditEvent
from audit.proofs import consistency_document, inclusion_entries, proof_write

VERIFIER = Path(__file__).with_name("bundle_verify.py")


class BundleError(Exception):
    """No bundle can be made (no key, no checkpoint)."""


@dataclass(frozen=True)
class BundleSummary:
    events: int
    checkpoints: int
    tree_size: int
    complete: bool


class _Hashed:
    """A zip entry being written, hashed on the way for the MANIFEST."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.sha256 = handle, hashlib.sha256()

    def write(self, data: bytes | str) -> int:
        raw = data.encode() if isinstance(data, str) else data
        self.sha256.update(raw)
        return self.handle.write(raw)


class _Bundle:
    def __init__(self, archive: ZipFile, moment: datetime) -> None:
        self.archive = archive
        self.date_time = (
            moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second
        )  # fmt: skip
        self.digests: dict[str, str] = {}

    @contextmanager
    def entry(self, name: str) -> Iterator[_Hashed]:
        info = ZipInfo(name, date_time=self.date_time)
        info.compress_type = ZIP_DEFLATED
        with self.archive.open(info, "w", force_zip64=True) as handle:
            hashed = _Hashed(handle)
            yield hashed
        self.digests[name] = hashed.sha256.hexdigest()

    def add(self, name: str, data: bytes | str) -> None:
        with self.entry(name) as handle:
            handle.write(data)


def bundle_write(output: IO[bytes], events: QuerySet[AuditEvent]) -> BundleSummary:
    """Write the bundle for `events` (as selected, up to the latest checkpoint) as a zip."""
    key = signing_key()
    if key is None:
        raise BundleError("AUDIT_SIGNING_KEY is not set: there is no key to prove anything with")
    latest = checkpoint_latest()
    if latest is None:
        raise BundleError("there is no signed checkpoint yet: run manage.py audit_checkpoint")
    covered = events.filter(sequence__lte=latest.size).order_by("sequence")
    # The selection is a set of distinct sequences up to the size: all of them or not.
    count = covered.count()
    complete = count == latest.size
    checkpoints = list(AuditCheckpoint.objects.filter(size__lte=latest.size).order_by("size"))
    with ZipFile(output, "w") as archive:
        bundle = _Bundle(archive, timezone.now())
        with bundle.entry("export.jsonl") as handle:
            rows = covered.values_list(*integrity_fields()).iterator(chunk_size=2000)
            coverage = database_coverage()
            for row in rows:
                handle.write(integrity_line(row, coverage) + "\n")
        for checkpoint in checkpoints:
            bundle.add(f"checkpoints/checkpoint-{checkpoint.size:012d}.txt", checkpoint.note)
        stamps = AuditCheckpointTimestamp.objects.filter(checkpoint_size__lte=latest.size)
        for size, token in stamps.values_list("checkpoint_size", "token"):
            bundle.add(f"checkpoints/checkpoint-{size:012d}.tsr", bytes(token))
        bundle.add("consistency.json", _json(consistency_document(latest, checkpoints[:-1])) + "\n")
        if not complete:
            with bundle.entry("proofs.json") as handle:
                proof_write(handle, latest.note, inclusion_entries(covered, latest))
        bundle.add("public-key.txt", key.verifier.text + "\n")
        if settings.AUDIT_TSA_CA_FILE and Path(settings.AUDIT_TSA_CA_FILE).is_file():
            bundle.add("tsa-ca.pem", Path(settings.AUDIT_TSA_CA_FILE).read_bytes())
        bundle.add("verify.py", VERIFIER.read_bytes())
        bundle.add("README.md", bundle_readme(latest, complete=complete, count=count))
        archive.writestr(
            ZipInfo("MANIFEST", date_time=bundle.date_time),
            "".join(f"{digest}  {name}\n" for name, digest in sorted(bundle.digests.items())),
        )
    return BundleSummary(count, len(checkpoints), latest.size, complete)


def _json(value: object) -> str:
    return json.dumps(value, indent=1)


def bundle_readme(latest: AuditCheckpoint, *, complete: bool, count: int) -> str:
    selection = (
        f"the complete log: all {count} events up to the latest checkpoint"
        if complete
        else f"a selection of {count} events of the log, each with its inclusion proof"
    )
    return BUNDLE_README.format(
        size=latest.size,
        selection=selection,
        proofs_line=(
            ""
            if complete
            else "- `proofs.json`: an inclusion proof for each exported event against the\n"
            "  latest checkpoint.\n"
        ),
        cryptography=version("cryptography"),
    )


BUNDLE_README = """# Audit evidence bundle

This bundle holds {selection} (tree size {size}), the signed checkpoints that cover it,
and everything needed to check it without the system that made it, and without
trusting its operator.

## Check it

    python3 -m venv /tmp/verify-env
    /tmp/verify-env/bin/pip install cryptography=={cryptography}
    /tmp/verify-env/bin/python verify.py --pubkey 'THE-PUBLIC-KEY-YOU-WERE-GIVEN'

`verify.py` needs Python 3.10+ and `cryptography` only. It prints each check and `OK`
(exit 0), or `FAIL` and exactly what is wrong (exit 1), or `ERROR` if the bundle cannot be
checked (exit 2). Without `--pubkey` it uses `public-key.txt` from this bundle, which only
proves the bundle is self-consistent: compare that key with one you got another way.

If you kept a checkpoint from earlier (from a witness, a published directory, or an
earlier bundle), add `--checkpoint that-file.txt`: the check then also proves that this
log extends it, so nothing it covered was changed, removed or reordered since.

Time-stamp tokens (`checkpoints/*.tsr`, when present) are RFC 3161 responses over the
checkpoint files' exact bytes. `verify.py` checks that each is over its checkpoint; check
the time-stamp authority's signature with OpenSSL:

    openssl ts -verify -data checkpoints/checkpoint-000000000012.txt \\
        -in checkpoints/checkpoint-000000000012.tsr -CAfile tsa-ca.pem

## What is in it

- `export.jsonl`: the events, one per line, keys in the seed guide's order followed by
  `sequence`, `api_key_fingerprint`, `context`, `content_digest`, `previous_hash`, `hash`
  (and `"erased_by": N` on an event whose personal content was erased by the erasure or
  retention event of sequence N: its `context` is `{{}}`, its `full_response` null).
- `checkpoints/checkpoint-<tree size>.txt`: every signed checkpoint up to the latest.
- `consistency.json`: an RFC 9162 consistency proof from each earlier checkpoint to the
  latest (`{{"new_size": N, "proofs": [{{"old_size": M, "proof": [base64, ...]}}]}}`).
{proofs_line}- `public-key.txt`: the log's public key.
- `verify.py`, this README, and `MANIFEST` (the SHA-256 of every other file).

## The definitions verify.py implements

- **Content digest** of an event: SHA-256 (hex) of the UTF-8 bytes of
  `json.dumps([timestamp, channel, action, end_user_id, response_id, conversation_id,
  previous_response_id, api_key_fingerprint, context_json], ensure_ascii=False,
  separators=(",", ":")) + "\\n" + full_response_text`, where `context_json` is the
  context as compact JSON with sorted keys and `full_response_text` is the exact text of
  the `full_response` value in the line.
- **Hash chain**: `hash` = SHA-256 (hex) of `"<sequence>:<previous_hash>:<content_digest>"`;
  the first event's `previous_hash` is 64 zeros; sequences run 1, 2, 3, ... without gaps.
- **Merkle tree** (RFC 9162, section 2.1) over the events in sequence order: leaf data of
  an event = its sequence as 8 bytes big-endian followed by the 32 bytes of its content
  digest; leaf hash = SHA-256(0x00 || leaf data); node hash = SHA-256(0x01 || left ||
  right); the empty tree's root is SHA-256 of nothing. The tree commits to exactly what
  the chain commits to, so an erased event's leaf is unchanged.
- **Checkpoint** (c2sp.org/tlog-checkpoint in a c2sp.org/signed-note): the text
  `<origin>\\n<tree size>\\n<base64 root>\\n`, a blank line, then
  `— <key name> base64(key id || Ed25519 signature of the text)`; key id = first 4 bytes
  of SHA-256(key name || 0x0A || 0x01 || 32-byte public key). The public key is written
  `<name>+<key id hex>+base64(0x01 || public key)`.
- **Erased events**: an event whose context is `{{}}` and `full_response` null and whose
  digest does not match is erased, not changed, only if the log says why: an `erasure`
  event of the same `end_user_id` with a higher sequence, or a `retention` event with a
  higher sequence whose `context.cutoff` is after the event's `timestamp`. Its stored
  digest is then used for the chain and the tree. Events that record compliance
  (`erasure`, `retention`, `legal_hold.*`, the MKA1 deletions) are never erased.
- **Inclusion proof** of sequence n: RFC 9162's PATH(n - 1, D[tree size]), bottom-up,
  base64; checked with the algorithm of RFC 9162 2.1.3.2.
"""
