"""WhatsApp's metrics on `/metrics`: webhook deliveries kept but not yet fanned out into
messages by the worker (a backlog here means the consumer is behind or down), and
deliveries set aside because they could not be fanned out."""

from collections.abc import Iterator

from django.utils import timezone
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

from multichannel.metrics import gauge
from whatsapp.selectors import deliveries_waiting

DELIVERIES_SET_ASIDE = Counter(
    "multichannel_webhook_deliveries_set_aside_total",
    "Webhook deliveries that could not be fanned out (kept, with the error, in the admin)",
)


def waiting_gauges() -> Iterator[GaugeMetricFamily]:
    waiting = deliveries_waiting()
    yield gauge(
        "multichannel_webhook_deliveries_waiting",
        "Webhook deliveries kept but not yet fanned out into messages",
        waiting.count,
    )
    oldest = waiting.oldest_received_at
    yield gauge(
        "multichannel_oldest_waiting_delivery_age_seconds",
        "How long the oldest delivery not yet fanned out has waited (0 when none)",
        (timezone.now() - oldest).total_seconds() if oldest else 0.0,
    )
