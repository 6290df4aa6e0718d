"""The audit hash chain: how an event's content is digested and chained.

content_digest = sha256 of a canonical serialisation of the event's content
hash           = sha256 of "<sequence>:<previous hash>:<content_digest>"

Everything here works on plain values, so the same code verifies the database and an
exported JSONL file offline.
"""

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64


def ledger_moment(moment: datetime) -> datetime:
    """A moment as the ledger stores and compares it: UTC, truncated to the
    milliseconds that `format_timestamp` (and so the export and the digest) shows."""
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def format_timestamp(moment: datetime) -> str:
    """UTC, milliseconds (truncated), `Z`. The content digests of the hash chain cover
    this text, so it must never change for any input."""
    moment = moment.astimezone(UTC)
    if moment.year < 1000:
        # isoformat() pads the year to four digits; strftime's %Y does not on glibc.
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    # Same text as the strftime above, without time.strftime's round trip (it is on the
    # export's hot path): "2026-03-30T19:10:14.412+00:00" less the offset, plus "Z".
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def canonical_context(context: Mapping[str, Any] | None) -> str:
    return json.dumps(context or {}, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def content_digest(
    *,
    timestamp: str,
    channel: str,
    action: str,
    end_user_id: str,
    response_id: str | None,
    conversation_id: str | None,
    previous_response_id: str | None,
    full_response: str,
    api_key_fingerprint: str,
    context: Mapping[str, Any] | None,
) -> str:
    """`timestamp` as exported (UTC, milliseconds, Z); `full_response` as the exact JSON
    text stored and exported, so the digest does not depend on re-serialising it."""
    fields = [
        timestamp,
        channel,
        action,
        end_user_id,
        response_id,
        conversation_id,
        previous_response_id,
        api_key_fingerprint,
        canonical_context(context),
    ]
    canonical = json.dumps(fields, ensure_ascii=False, separators=(",", ":")) + "\n" + full_response
    return hashlib.sha256(canonical.encode()).hexdigest()


def chain_hash(*, sequence: int, previous_hash: str, digest: str) -> str:
    return hashlib.sha256(f"{sequence}:{previous_hash}:{digest}".encode()).hexdigest()
