"""The audit JSONL format: one event per line, keys in the seed guide's order."""

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from audit.integrity import canonical_context
from audit.models import AuditEvent

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


def format_timestamp(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# One encoder for every field: json.dumps(..., ensure_ascii=False) builds a new encoder
# per call, which is most of the cost of a line on a million-event export.
_value = json.JSONEncoder(ensure_ascii=False).encode


# The seed guide's keys, in order; each is also the AuditEvent field it comes from.
_LINE = (
    '{"timestamp":%s,"channel":%s,"action":%s,"end_user_id":%s,"response_id":%s,'
    '"conversation_id":%s,"previous_response_id":%s,"full_response":%s}'
)


def values_line(values: Sequence[Any]) -> str:
    """One JSONL line (without the newline) from the fields named in SEED_KEYS, in that
    order, as `values_list(*SEED_KEYS)` gives them: exporting plain rows rather than
    model instances halves the cost of a large export. `full_response` is already
    compact JSON text in the row, so it is spliced in as-is rather than re-dumped."""
    moment, channel, action, end_user_id, response_id, conversation_id, previous, full = values
    return _LINE % (
        _value(format_timestamp(moment)),
        _value(channel),
        _value(action),
        _value(end_user_id),
        _value(response_id),
        _value(conversation_id),
        _value(previous),
        full,
    )


def event_line(event: AuditEvent) -> str:
    """One JSONL line (without the newline)."""
    return values_line([getattr(event, key) for key in SEED_KEYS])


def event_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    for event in events:
        yield event_line(event) + "\n"


# `export_audit --with-integrity` appends these after the seed's eight keys.
INTEGRITY_FIELDS = (
    "sequence",
    "api_key_fingerprint",
    "context",
    "content_digest",
    "previous_hash",
    "hash",
)
_INTEGRITY = (
    ',"sequence":%d,"api_key_fingerprint":%s,"context":%s,'
    '"content_digest":%s,"previous_hash":%s,"hash":%s}'
)


def integrity_line(values: Sequence[Any]) -> str:
    """A seed-format line with the integrity fields appended, from
    `values_list(*SEED_KEYS, *INTEGRITY_FIELDS)`. The context is written in the
    canonical form the digest covers (sorted keys)."""
    seed, extra = values[: len(SEED_KEYS)], values[len(SEED_KEYS) :]
    sequence, fingerprint, context, digest, previous_hash, link = extra
    return values_line(seed)[:-1] + _INTEGRITY % (
        sequence,
        _value(fingerprint),
        canonical_context(context),
        _value(digest),
        _value(previous_hash),
        _value(link),
    )
