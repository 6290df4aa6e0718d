"""Metrics to watch it in production: /metrics in Prometheus format, for the scraper
only, with counters that move when work is done."""

from io import StringIO

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from multichannel.sandbox import whatsapp as wa
from tests.support.webhooks import PostWebhook

pytestmark = pytest.mark.django_db


def scrape(client: Client, **headers: str) -> dict[tuple[str, tuple], float]:
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.content
    assert answer["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(answer.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_turn_moves_the_counters(
    client: Client, settings, post_webhook: PostWebhook, django_capture_on_commit_callbacks
) -> None:
    settings.METRICS_TOKEN = "test-metrics-token-0123456789"
    auth = {"Authorization": f"Bearer {settings.METRICS_TOKEN}"}
    before = scrape(client, **auth)
    with django_capture_on_commit_callbacks(execute=True):
        post_webhook(wa.webhook_payload([wa.message_event(text="count me")]))
    after = scrape(client, **auth)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("multichannel_webhook_requests_total", status="200") == 1
    create = {"service": "MKA1", "operation": "POST /api/v1/llm/responses", "status": "200"}
    assert moved("multichannel_outside_calls_total", **create) == 1
    latency = {"service": "MKA1", "operation": "POST /api/v1/llm/responses"}
    assert moved("multichannel_outside_call_seconds_count", **latency) == 1
    assert moved("multichannel_whatsapp_sends_total", result="accepted") == 1
    written = {"channel": "whatsapp", "action": "responses.create"}
    assert moved("multichannel_audit_events_total", **written) == 1
    assert value(after, "multichannel_unfinished_messages") == 0
    assert value(after, "multichannel_oldest_unfinished_message_age_seconds") == 0
    assert value(after, "multichannel_webhook_deliveries_waiting") == 0
    assert value(after, "multichannel_oldest_waiting_delivery_age_seconds") == 0


def test_ids_never_become_label_values() -> None:
    from multichannel.metrics import operation_label

    assert operation_label("GET", "/api/v1/llm/responses/resp_abc123") == (
        "GET /api/v1/llm/responses/{id}"
    )
    assert operation_label("DELETE", "/api/v1/llm/conversations/conv_1/items/msg_2") == (
        "DELETE /api/v1/llm/conversations/{id}/items/{id}"
    )
    assert operation_label("POST", "/v25.0/100000000000001/messages") == (
        "POST /v25.0/{id}/messages"
    )


def test_a_queued_message_shows_as_unfinished_with_its_age(
    client: Client, settings, post_webhook: PostWebhook
) -> None:
    settings.METRICS_TOKEN = "test-metrics-token-0123456789"
    post_webhook(wa.webhook_payload([wa.message_event(text="waiting")]))  # not run
    samples = scrape(client, Authorization=f"Bearer {settings.METRICS_TOKEN}")
    assert value(samples, "multichannel_unfinished_messages") == 1
    assert value(samples, "multichannel_oldest_unfinished_message_age_seconds") >= 0


def test_a_delivery_not_fanned_out_shows_as_waiting_with_its_age(
    client: Client, settings, post_webhook: PostWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from whatsapp import views
    from whatsapp.models import WebhookDelivery

    settings.METRICS_TOKEN = "test-metrics-token-0123456789"
    monkeypatch.setattr(views, "webhook_fan_out_queue", lambda delivery_id: None)  # lost
    post_webhook(wa.webhook_payload([wa.message_event(text="kept")]))
    WebhookDelivery.objects.update(received_at=timezone.now() - timedelta(seconds=90))
    samples = scrape(client, Authorization=f"Bearer {settings.METRICS_TOKEN}")
    assert value(samples, "multichannel_webhook_deliveries_waiting") == 1
    assert value(samples, "multichannel_oldest_waiting_delivery_age_seconds") >= 90
    assert value(samples, "multichannel_unfinished_messages") == 0  # not a message yet


@pytest.mark.parametrize(
    ("token", "networks", "sent", "status"),
    [
        ("", [], "", 404),
        ("right-token-0123456789", [], "Bearer wrong", 404),
        ("right-token-0123456789", [], "Bearer right-token-0123456789", 200),
        ("", ["127.0.0.0/8"], "", 200),
        ("", ["10.0.0.0/8"], "", 404),
    ],
)
def test_only_the_scraper_gets_the_metrics(
    client: Client, settings, token: str, networks: list, sent: str, status: int
) -> None:
    settings.METRICS_TOKEN = token
    settings.METRICS_ALLOWED_NETWORKS = networks
    headers = {"Authorization": sent} if sent else {}
    assert client.get("/metrics", headers=headers).status_code == status


def test_the_ledger_checks_show_their_last_result_and_age(
    client: Client, settings, audit_key, post_webhook: PostWebhook
) -> None:
    from django.core.management import call_command

    from tests.support.audit_ledger import record

    settings.METRICS_TOKEN = "test-metrics-token-0123456789"
    auth = {"Authorization": f"Bearer {settings.METRICS_TOKEN}"}
    nothing_yet = scrape(client, **auth)
    assert ("multichannel_audit_verify_ok", ()) not in nothing_yet
    assert ("multichannel_audit_checkpoint_age_seconds", ()) not in nothing_yet
    assert value(nothing_yet, "multichannel_audit_checkpoint_ok") == 1  # nothing to sign

    record(2)
    assert value(scrape(client, **auth), "multichannel_audit_checkpoint_ok") == 0  # unsigned
    call_command("verify_audit", stdout=StringIO())
    call_command("audit_checkpoint", stdout=StringIO())
    samples = scrape(client, **auth)
    assert value(samples, "multichannel_audit_verify_ok") == 1
    assert 0 <= value(samples, "multichannel_audit_verify_age_seconds") < 60
    assert value(samples, "multichannel_audit_checkpoint_ok") == 1
    assert 0 <= value(samples, "multichannel_audit_checkpoint_age_seconds") < 60


def test_a_failed_verification_shows_as_zero(client: Client, settings, without_triggers) -> None:
    from tests.support.audit_ledger import failure, raw_sql, record

    settings.METRICS_TOKEN = "test-metrics-token-0123456789"
    record(2)
    raw_sql("UPDATE audit_auditevent SET response_id = 'resp_forged' WHERE sequence = 1")
    assert "changed" in str(failure("verify_audit"))
    samples = scrape(client, Authorization=f"Bearer {settings.METRICS_TOKEN}")
    assert samples[("multichannel_audit_verify_ok", ())] == 0
