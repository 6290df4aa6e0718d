"""The seed guide's four conditions, checked for every response created on one channel
and retrieved on the other: same API key, same end-user id, same response id, same
conversation id."""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from audit.integrity import format_timestamp
from audit.models import AuditAction, AuditEvent

CONDITIONS = ("same_api_key", "same_end_user_id", "same_response_id", "same_conversation_id")
LABELS = {
    "same_api_key": "same API key",
    "same_end_user_id": "same end user id (X-On-Behalf-Of)",
    "same_response_id": "same response id",
    "same_conversation_id": "same conversation id",
}


@dataclass(frozen=True)
class Pair:
    created: AuditEvent
    retrieved: AuditEvent
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(self.checks.values())


def _object_id(event: AuditEvent) -> str | None:
    try:
        data = json.loads(event.full_response)
    except ValueError:
        return None
    return data.get("id") if isinstance(data, dict) else None


def check(created: AuditEvent, retrieved: AuditEvent) -> Pair:
    return Pair(
        created,
        retrieved,
        {
            "same_api_key": bool(created.api_key_fingerprint)
            and created.api_key_fingerprint == retrieved.api_key_fingerprint,
            "same_end_user_id": created.end_user_id == retrieved.end_user_id,
            "same_response_id": created.response_id == retrieved.response_id
            and _object_id(created) == _object_id(retrieved) == created.response_id,
            "same_conversation_id": bool(created.conversation_id)
            and created.conversation_id == retrieved.conversation_id,
        },
    )


def cross_channel_pairs(*, response_id: str | None = None) -> Iterator[Pair]:
    """Each retrieval paired with the create of the same response on another channel."""
    retrievals = AuditEvent.objects.filter(action=AuditAction.RESPONSES_GET).exclude(
        response_id=None
    )
    if response_id:
        retrievals = retrievals.filter(response_id=response_id)
    for retrieved in retrievals.order_by("sequence").iterator(chunk_size=500):
        created = (
            AuditEvent.objects.filter(
                action=AuditAction.RESPONSES_CREATE, response_id=retrieved.response_id
            )
            .exclude(channel=retrieved.channel)
            .order_by("sequence")
            .first()
        )
        if created is not None:
            yield check(created, retrieved)


def event_summary(event: AuditEvent) -> dict[str, Any]:
    return {
        "sequence": event.sequence,
        "timestamp": format_timestamp(event.timestamp),
        "channel": event.channel,
        "action": event.action,
        "end_user_id": event.end_user_id,
        "response_id": event.response_id,
        "conversation_id": event.conversation_id,
        "api_key_fingerprint": event.api_key_fingerprint,
    }


def pair_json(pair: Pair) -> dict[str, Any]:
    return {
        "response_id": pair.created.response_id,
        "result": "PASS" if pair.passed else "FAIL",
        "conditions": {name: "PASS" if ok else "FAIL" for name, ok in pair.checks.items()},
        "created": event_summary(pair.created),
        "retrieved": event_summary(pair.retrieved),
    }


def timeline(end_user_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Every event of these end users, in chain order, across channels."""
    events = AuditEvent.objects.filter(end_user_id__in=end_user_ids).order_by("sequence")
    result: dict[str, list[dict[str, Any]]] = {user: [] for user in sorted(end_user_ids)}
    for event in events.iterator(chunk_size=500):
        result[event.end_user_id].append(event_summary(event))
    return result
