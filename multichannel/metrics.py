"""Prometheus metrics: what an operator watches in production.

Counters and histograms are kept by prometheus-client in every process that does the
work (the web workers, the queue consumer); with `PROMETHEUS_MULTIPROC_DIR` set (the
production profile sets it for gunicorn and run_huey on one machine) they are shared
through files in that folder and `/metrics` adds them up. Gauges about the state of the
data (unfinished messages, the ledger's checks) are read from the database when scraped,
so they are right whichever process scrapes.

`/metrics` is refused unless METRICS_TOKEN (sent as `Authorization: Bearer …`) or an
address in METRICS_ALLOWED_NETWORKS lets the scraper in."""

import hmac
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Iterator

from django.conf import settings
from django.db.models import Min
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

WEBHOOK_REQUESTS = Counter(
    "multichannel_webhook_requests_total",
    "WhatsApp webhook requests, by the status answered",
    ["status"],
)
OUTSIDE_CALLS = Counter(
    "multichannel_outside_calls_total",
    "Calls to outside services (MKA1, the Graph API), by service, operation and outcome",
    ["service", "operation", "status"],
)
OUTSIDE_SECONDS = Histogram(
    "multichannel_outside_call_seconds",
    "Latency of calls to outside services, per attempt",
    ["service", "operation"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
WHATSAPP_SENDS = Counter(
    "multichannel_whatsapp_sends_total",
    "Messages sent through the Graph API, by result",
    ["result"],
)
RETRIES = Counter(
    "multichannel_retries_total",
    "Steps of answering a message that failed and were scheduled again",
    ["state"],
)
GIVE_UPS = Counter(
    "multichannel_give_ups_total",
    "Messages given up on (an apology sent, or delivery failed for good)",
    ["state"],
)

# Path segments of outside APIs that name a collection; anything else is an id, and
# ids must not become label values (one time series per response would be unbounded).
_NAMES = {
    "api",
    "v1",
    "llm",
    "conversations",
    "responses",
    "items",
    "files",
    "feedback",
    "speech",
    "transcriptions",
    "history",
    "content",
    "messages",
    "media",
}
_VERSION = re.compile(r"^v\d+(\.\d+)?$")


def operation_label(method: str, path: str) -> str:
    """`GET /responses/resp_1` -> `GET /responses/{id}`: bounded label values."""
    segments = [
        segment if segment in _NAMES or _VERSION.match(segment) else "{id}"
        for segment in path.split("?", 1)[0].strip("/").split("/")
        if segment
    ]
    return f"{method} /{'/'.join(segments)}"


class StateCollector(Collector):
    """Gauges read from the database at scrape time."""

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # registering must not query the database (it may not exist yet)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from multichannel.models import UserMessage

        unfinished = UserMessage.objects.filter(
            state__in=(UserMessage.State.QUEUED, UserMessage.State.ANSWERED)
        )
        summary = unfinished.aggregate(oldest=Min("created_at"))
        depth = GaugeMetricFamily(
            "multichannel_unfinished_messages", "Messages stored but not yet answered or sent"
        )
        depth.add_metric([], unfinished.count())
        yield depth
        age = GaugeMetricFamily(
            "multichannel_oldest_unfinished_message_age_seconds",
            "How long the oldest unfinished message has waited (0 when none)",
        )
        oldest = summary["oldest"]
        age.add_metric([], (timezone.now() - oldest).total_seconds() if oldest else 0.0)
        yield age
        yield from _ledger_checks()
        for gauges in _channel_gauges:
            yield from gauges()


def _ledger_checks() -> Iterator[GaugeMetricFamily]:
    """The last `verify_audit` of the database and the last signed checkpoint: each
    one's result (1 good, 0 not) and age. Absent until there is one."""
    from audit.models import AuditCheckpoint, AuditVerification
    from audit.publishing import checkpoint_health

    now = timezone.now()
    verification = AuditVerification.objects.order_by("-ran_at").first()
    if verification is not None:
        yield gauge(
            "multichannel_audit_verify_ok",
            "Whether the last verify_audit of the database passed (1) or failed (0)",
            float(verification.ok),
        )
        yield gauge(
            "multichannel_audit_verify_age_seconds",
            "Seconds since the last verify_audit of the database",
            (now - verification.ran_at).total_seconds(),
        )
    health = checkpoint_health(now)
    if health != "not configured":
        yield gauge(
            "multichannel_audit_checkpoint_ok",
            "Whether signed checkpoints are current and published (1), or overdue, "
            "failing to publish or missing (0); /healthz says which",
            float(health == "ok"),
        )
    checkpoint = AuditCheckpoint.objects.order_by("-size").only("created_at").first()
    if checkpoint is not None:
        yield gauge(
            "multichannel_audit_checkpoint_age_seconds",
            "Seconds since the last signed checkpoint",
            (now - checkpoint.created_at).total_seconds(),
        )


# Gauges a channel app adds about its own state (read at scrape time, like the above).
_channel_gauges: list[Callable[[], Iterable[GaugeMetricFamily]]] = []


def state_gauges_register(gauges: Callable[[], Iterable[GaugeMetricFamily]]) -> None:
    if gauges not in _channel_gauges:
        _channel_gauges.append(gauges)


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    """One gauge without labels."""
    gauge = GaugeMetricFamily(name, documentation)
    gauge.add_metric([], value)
    return gauge


_STATE = StateCollector()
REGISTRY.register(_STATE)


def registry() -> CollectorRegistry:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY  # one process: its own counters
    scrape = CollectorRegistry()
    # Every process's counters, added up.
    multiprocess.MultiProcessCollector(scrape)  # type: ignore[no-untyped-call]
    scrape.register(_STATE)
    return scrape


def scraper_allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
    networks = settings.METRICS_ALLOWED_NETWORKS
    if networks:
        try:
            address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(net, strict=False) for net in networks)
    return False


@require_GET
@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not scraper_allowed(request):
        # 404, not 401: an outsider learns nothing about what is here.
        return HttpResponse("not found", status=404, content_type="text/plain")
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
