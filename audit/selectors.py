from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from audit.models import AuditEvent


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
