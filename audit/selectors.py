from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from audit.models import AuditChainHead, AuditEvent


@dataclass(frozen=True)
class AuditFilter:
    since: datetime | None = None
    until: datetime | None = None
    end_user_id: str | None = None
    conversation_id: str | None = None
    response_id: str | None = None
    channel: str | None = None
    action: str | None = None


def audit_events_filter(criteria: AuditFilter) -> QuerySet[AuditEvent]:
    """Events matching every given criterion, in chain order; `until` is exclusive."""
    events = AuditEvent.objects.all()
    if criteria.since is not None:
        events = events.filter(timestamp__gte=criteria.since)
    if criteria.until is not None:
        events = events.filter(timestamp__lt=criteria.until)
    if criteria.end_user_id:
        events = events.filter(end_user_id=criteria.end_user_id)
    if criteria.conversation_id:
        events = events.filter(conversation_id=criteria.conversation_id)
    if criteria.response_id:
        events = events.filter(response_id=criteria.response_id)
    if criteria.channel:
        events = events.filter(channel=criteria.channel)
    if criteria.action:
        events = events.filter(action=criteria.action)
    return events.order_by("sequence")


def chain_links(*, after: int, upto: int, chunk: int = 5000) -> Iterator[tuple[int, str, str, str]]:
    """(sequence, content_digest, previous_hash, hash) of events after..upto, in chain
    order: what the Merkle tree and a link-by-link check need, without the bodies."""
    rows = (
        AuditEvent.objects.filter(sequence__gt=after, sequence__lte=upto)
        .order_by("sequence")
        .values_list("sequence", "content_digest", "previous_hash", "hash")
    )
    yield from rows.iterator(chunk_size=chunk)


def event_hash(sequence: int) -> str | None:
    return AuditEvent.objects.filter(sequence=sequence).values_list("hash", flat=True).first()


def chain_head_size() -> int:
    """How many events the ledger holds, by its chain head."""
    size = AuditChainHead.objects.filter(pk=1).values_list("sequence", flat=True).first()
    return int(size or 0)
