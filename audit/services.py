"""The one function that writes audit events."""

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.integrity import canonical_context, chain_hash, content_digest
from audit.jsonl import format_timestamp
from audit.models import AuditChainHead, AuditEvent


@runtime_checkable
class WireObject(Protocol):
    """An object received from an outside service with the body text exactly as it came
    off the wire (the MKA1 client's `Mka1Object` is one)."""

    @property
    def raw(self) -> str: ...


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# A whole string literal (group 1, kept as it is) or whitespace between JSON tokens.
_STRING_OR_GAP = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")|[ \t\n\r]+')


def compact_wire_text(raw: str) -> str:
    """Valid JSON text `raw` with only the whitespace between tokens removed."""
    json.loads(raw)  # refuse anything that is not JSON before trusting the tokenizer
    return _STRING_OR_GAP.sub(lambda match: match.group(1) or "", raw)


def full_response_text(full_response: WireObject | Mapping[str, Any] | None) -> str:
    """The object as received, in compact form; key order and values are kept."""
    if full_response is None:
        return "null"
    if isinstance(full_response, WireObject):
        # Use the wire text rather than the parsed dict so nothing we did to the dict
        # after receiving it can leak into the ledger. Only whitespace is dropped: a
        # json.loads/dumps round trip would rewrite numbers (1e5 -> 100000.0, 1E400 ->
        # Infinity, which is not JSON) and the ledger must keep what MKA1 sent.
        return compact_wire_text(full_response.raw)
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
    full_response: WireObject | Mapping[str, Any] | None = None,
    api_key_fingerprint: str = "",
    context: Mapping[str, Any] | None = None,
    timestamp: datetime | None = None,
) -> AuditEvent:
    """Append one event to the ledger and the hash chain.

    Runs in its own (possibly nested) transaction and holds the chain head's row lock
    until the outermost transaction commits, so concurrent writers line up one after
    the other: each takes the next sequence number and chains to the hash before it.
    """
    if not end_user_id:
        raise ValueError("an audit event needs the end user id")
    text = full_response_text(full_response)
    context_value = json.loads(canonical_context(context))  # JSON-safe, or refuse now
    content = {
        "channel": channel,
        "action": action,
        "end_user_id": end_user_id,
        "response_id": response_id,
        "conversation_id": conversation_id,
        "previous_response_id": previous_response_id,
        "full_response": text,
        "api_key_fingerprint": api_key_fingerprint,
        "context": context_value,
    }
    with transaction.atomic():
        head = _locked_head()
        # Taken under the lock, so timestamps follow the chain order.
        moment = _millis(timestamp or timezone.now())
        sequence = head.sequence + 1
        digest = content_digest(timestamp=format_timestamp(moment), **content)
        link = chain_hash(sequence=sequence, previous_hash=head.hash, digest=digest)
        event = AuditEvent(
            sequence=sequence,
            timestamp=moment,
            content_digest=digest,
            previous_hash=head.hash,
            hash=link,
            **content,
        )
        event._recording = True  # type: ignore[attr-defined]
        event.save(force_insert=True)
        AuditChainHead.objects.filter(pk=head.pk).update(sequence=sequence, hash=link)
    return event


def _locked_head() -> AuditChainHead:
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is not None:
        return head
    try:
        with transaction.atomic():
            AuditChainHead.objects.create(pk=1)
    except IntegrityError:
        pass  # a concurrent writer created it first
    return AuditChainHead.objects.select_for_update().get(pk=1)
