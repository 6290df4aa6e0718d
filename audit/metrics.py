"""The ledger's own Prometheus counter (multichannel/metrics.py serves /metrics; this
app sits below it and only counts)."""

from prometheus_client import Counter

AUDIT_EVENTS = Counter(
    "multichannel_audit_events_total",
    "Audit events written (committed), by channel and action",
    ["channel", "action"],
)
