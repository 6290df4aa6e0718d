"""The ledger's write surface for the other apps."""

from audit.models import AuditEvent

# Every app appends through this one name (the manager method does the work).
audit_event_record = AuditEvent.objects.record

__all__ = ["audit_event_record"]
