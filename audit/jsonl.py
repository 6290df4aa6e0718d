"""The audit JSONL format: one event per line, keys in the seed guide's order."""

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

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


def _value(value: str | None) -> str:
    return json.dumps(value, ensure_ascii=False)


def event_line(event: AuditEvent) -> str:
    """One JSONL line (without the newline). `full_response` is already compact JSON
    text in the row, so it is spliced in as-is rather than parsed and re-dumped."""
    return (
        '{"timestamp":' + _value(format_timestamp(event.timestamp))
        + ',"channel":' + _value(event.channel)
        + ',"action":' + _value(event.action)
        + ',"end_user_id":' + _value(event.end_user_id)
        + ',"response_id":' + _value(event.response_id)
        + ',"conversation_id":' + _value(event.conversation_id)
        + ',"previous_response_id":' + _value(event.previous_response_id)
        + ',"full_response":' + event.full_response
        + "}"
    )  # fmt: skip


def event_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    for event in events:
        yield event_line(event) + "\n"
