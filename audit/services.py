"""The ledger's write surface for the other apps."""

from django.db import connection

from audit.models import AuditChainHead, AuditEvent, LedgerUnavailableError, chain_head

# Every app appends through this one name (the manager method does the work).
audit_event_record = AuditEvent.objects.record
# ...and removes a person's content through this one, after recording the erasure or
# retention event that says why (audit/erasure.py).
audit_content_erase = AuditEvent.objects.erase_content


def audit_ready() -> None:
    """Raise LedgerUnavailableError when an event could not be recorded now. Called
    before anything that must be audited happens (an MKA1 call), so that nothing
    happens unaudited."""
    # The common case in one plain statement (the append's own read of the head): it
    # runs before every MKA1 call, and the ORM's query building cost several times the
    # query (docs/benchmarks.md).
    if chain_head(connection, lock=False) is not None:
        return
    # The second look at the head: a committed event implies a committed head (they
    # start in one transaction), so a ledger started concurrently between the first two
    # reads is not taken for one that lost its head.
    if AuditEvent.objects.exists() and not AuditChainHead.objects.filter(pk=1).exists():
        raise LedgerUnavailableError.head_lost()


__all__ = ["LedgerUnavailableError", "audit_content_erase", "audit_event_record", "audit_ready"]
