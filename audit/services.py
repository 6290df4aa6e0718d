"""The one function that writes audit events."""

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from audit.models import AuditEvent
from multichannel.mka1 import Mka1Object


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def full_response_text(full_response: Mka1Object | Mapping[str, Any] | None) -> str:
    """The object as received, in compact form; key order and values are kept."""
    if full_response is None:
        return "null"
    if isinstance(full_response, Mka1Object):
        # Re-read the wire text rather than the parsed dict so nothing we did to the
        # dict after receiving it can leak into the ledger.
        return compact_json(json.loads(full_response.raw))
    return compact_json(dict(full_response))


def _millis(moment: datetime) -> datetime:
    # The export shows milliseconds; store exactly what is exported.
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def audit_event_record(
    *,
    channel: str,
    action: str,
    end_user_id: str,
    response_id: str | None = None,
    conversation_id: str | None = None,
    previous_response_id: str | None = None,
    full_response: Mka1Object | Mapping[str, Any] | None = None,
    api_key_fingerprint: str = "",
    context: Mapping[str, Any] | None = None,
    timestamp: datetime | None = None,
) -> AuditEvent:
    if not end_user_id:
        raise ValueError("an audit event needs the end user id")
    event = AuditEvent(
        timestamp=_millis(timestamp or timezone.now()),
        channel=channel,
        action=action,
        end_user_id=end_user_id,
        response_id=response_id,
        conversation_id=conversation_id,
        previous_response_id=previous_response_id,
        full_response=full_response_text(full_response),
        api_key_fingerprint=api_key_fingerprint,
        context=dict(context or {}),
    )
    event._recording = True  # type: ignore[attr-defined]
    event.save(force_insert=True)
    return event
