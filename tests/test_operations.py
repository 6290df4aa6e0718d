"""Operating it: health endpoint, request ids, structured logs without secrets, deploy checks."""

import json
import logging

import pytest
from django.test import Client

from multichannel.observability import JsonFormatter, RequestIdFilter, request_id
from multichannel.sandbox import whatsapp as wa
from tests.support.stack import PRODUCTION_ENV, run_manage
from tests.support.webhooks import PostWebhook

pytestmark = pytest.mark.django_db


def test_health_reports_database_and_queue(client: Client) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ok",
        "database": "ok",
        "queue": "ok",
        "checkpoints": "not configured",
    }
    assert answer["Cache-Control"].startswith("max-age=0")


def test_health_is_503_when_the_database_is_unreachable(client: Client, monkeypatch) -> None:
    monkeypatch.setattr("multichannel.health._database", lambda: False)
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json() == {
        "status": "unavailable",
        "database": "unreachable",
        "queue": "ok",
        "checkpoints": "unknown",
    }


def test_health_is_503_when_the_queue_is_unreachable(client: Client, monkeypatch) -> None:
    from huey.contrib.djhuey import HUEY

    def broken() -> int:
        raise ConnectionError("redis down")

    monkeypatch.setattr(HUEY.storage, "queue_size", broken)
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json()["queue"] == "unreachable"


def test_every_response_carries_a_request_id(client: Client) -> None:
    generated = client.get("/healthz")["X-Request-ID"]
    assert len(generated) == 32
    assert client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    forged = client.get("/healthz", HTTP_X_REQUEST_ID="bad id\nwith newline")["X-Request-ID"]
    assert forged != "bad id\nwith newline"


def test_json_log_lines_carry_the_request_id() -> None:
    record = logging.LogRecord(
        "whatsapp.views", logging.INFO, __file__, 1, "hello %s", ("x",), None
    )
    token = request_id.set("rid-1")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello x"
    assert line["request_id"] == "rid-1"
    assert line["level"] == "INFO"
    assert line["logger"] == "whatsapp.views"


def test_info_logs_hold_no_message_bodies_or_secrets(
    post_webhook: PostWebhook, django_capture_on_commit_callbacks, caplog, settings
) -> None:
    secret_text = "my card number is 4111 1111 1111 1111"
    with caplog.at_level(logging.INFO), django_capture_on_commit_callbacks(execute=True):
        post_webhook(wa.webhook_payload([wa.message_event(text=secret_text)]))
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "webhook" in logged  # something was logged...
    for secret in (
        secret_text,
        "You said",
        settings.MKA1_API_KEY,
        settings.WHATSAPP_TOKEN,
        settings.WHATSAPP_APP_SECRET,
    ):
        assert secret not in logged  # ...but no body, reply or secret


PRODUCTION = PRODUCTION_ENV


def test_check_deploy_is_clean_with_the_production_variables(tmp_path) -> None:
    result = run_manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_without_whatsapp_settings_fails_the_checks(tmp_path) -> None:
    env = {**PRODUCTION, "WHATSAPP_APP_SECRET": ""}
    result = run_manage(tmp_path, "check", **env)
    assert result.returncode != 0
    assert "WHATSAPP_APP_SECRET" in result.stderr


def test_gunicorn_access_logs_leave_sign_in_tokens_out() -> None:
    from multichannel.redaction import redact

    assert redact("GET /signin/AbC-123_x HTTP/1.1") == ("GET /signin/[redacted] HTTP/1.1")
    assert redact("/api/conversation") == "/api/conversation"


def test_the_log_filter_redacts_tokens_and_secrets_in_messages_and_tracebacks(settings) -> None:
    import logging
    import sys

    from multichannel.observability import JsonFormatter, RedactingFilter

    settings.WHATSAPP_TOKEN = "EAAGnotARealTokenButLongEnough123"
    token = "AbCdEf0123456789_-xyzXYZ0123456789abcdefghi"
    record = logging.LogRecord(
        "django.security.csrf", logging.WARNING, __file__, 1,
        "Forbidden (%s): %s", ("CSRF cookie not set.", f"/signin/{token}"), None,
    )  # fmt: skip
    try:
        raise ValueError(f"Invalid header value b'Bearer {settings.WHATSAPP_TOKEN}\\n'")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record) is True
    line = JsonFormatter().format(record)
    assert token not in line
    assert settings.WHATSAPP_TOKEN not in line
    assert "/signin/[redacted]" in line
    assert "Bearer [redacted]" in line


def test_every_log_handler_redacts() -> None:
    from django.conf import settings

    for name, handler in settings.LOGGING["handlers"].items():
        assert "redact" in handler["filters"], name
