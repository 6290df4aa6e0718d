"""The production profile, for real: gunicorn and a Huey consumer with DEBUG off, on
PostgreSQL and Redis, calling MKA1 and the Graph API over HTTP (a separate sandbox
server plays both), answering a signed webhook."""

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from multichannel.sandbox import whatsapp as wa
from tests.support.ci import need
from tests.support.stack import (
    APP_SECRET,
    GRAPH_TOKEN,
    METRICS_TOKEN,
    MKA1_API_KEY,
    Stack,
    postgres_database,
    reachable,
    redis_flush,
)
from tests.support.webhooks import webhook_send

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


@pytest.fixture
def database() -> Iterator[str]:
    need(reachable("127.0.0.1", 5432), "PostgreSQL is not running on 127.0.0.1:5432")
    with postgres_database("mc_prod") as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    need(reachable("127.0.0.1", 6379), "Redis is not running on 127.0.0.1:6379")
    redis_flush(REDIS)
    return REDIS


@pytest.fixture
def stack(database: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path, database_url=database, redis_url=redis_url,
                    app_env={"HUEY_WORKERS": "2"})  # fmt: skip
    yield running
    running.stop()


def test_gunicorn_and_a_worker_on_postgres_and_redis_answer_a_webhook(stack: Stack) -> None:
    deploy = stack.run(
        "check", "--deploy", "--fail-level", "WARNING", env={"SECURE_SSL_REDIRECT": "true"}
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    app = stack.up().app_url
    deadline = time.monotonic() + 90

    assert requests.get(f"{app}/healthz", timeout=5).json() == {
        "status": "ok",
        "database": "ok",
        "queue": "ok",
        "checkpoints": "not configured",
    }
    assert requests.get(f"{app}/sandbox/whatsapp/", timeout=5).status_code == 404
    body = wa.encode(wa.webhook_payload([wa.message_event(text="production ping")]))
    answer = webhook_send(app, body, secret=APP_SECRET)
    assert answer.status_code == 200
    assert answer.headers["X-Request-ID"]
    replied = False
    while time.monotonic() < deadline and not replied:
        page = requests.get(f"{stack.sandbox_url}/sandbox/whatsapp/", timeout=5).text
        replied = "You said: production ping" in page
        time.sleep(0.3)
    assert replied, stack.log_tail()
    # One scrape of the web server shows what the consumer did too (multiprocess mode).
    metrics = requests.get(
        f"{app}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5
    ).text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
    }
    assert samples[("multichannel_webhook_requests_total", (("status", "200"),))] == 1
    create = (
        ("operation", "POST /api/v1/llm/responses"),
        ("service", "MKA1"),
        ("status", "200"),
    )
    assert samples[("multichannel_outside_calls_total", create)] >= 1, metrics
    assert samples[("multichannel_whatsapp_sends_total", (("result", "accepted"),))] == 1
    written = (("action", "responses.create"), ("channel", "whatsapp"))
    assert samples[("multichannel_audit_events_total", written)] == 1, metrics
    assert requests.get(f"{app}/metrics", timeout=5).status_code == 404  # not for outsiders
    stack.stop()

    verified, report = stack.verify_audit(events=2)  # conversations.create, responses.create
    assert verified, report
    text = stack.log_text()
    assert '"level": "INFO"' in text  # JSON logs
    for secret in (MKA1_API_KEY, GRAPH_TOKEN, APP_SECRET):
        assert secret not in text
