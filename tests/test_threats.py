"""Threats that only show with the real server: gunicorn serving the production profile
(DEBUG off, JSON logs). What an outsider sends must not put a sign-in token in any log
line, a correctly signed chunked webhook must be read whole, and a sandbox must never be
served in production. (Each row of the README's "threats and controls" table names its
test; the ones that need no real process live with their behaviour area.)"""

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from multichannel.sandbox import whatsapp as wa
from tests.support.stack import APP_SECRET, ROOT, SECRET_KEY, Stack, query


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """gunicorn alone, in the production profile, on a scratch SQLite database."""
    stack = Stack(tmp_path_factory.mktemp("threats"))
    stack.manage("migrate", "-v0")
    stack.start("web")
    try:
        yield stack
    finally:
        stack.stop()


def test_sign_in_tokens_never_reach_any_log_line(web: Stack) -> None:
    token = secrets.token_urlsafe(32)
    link = f"{web.app_url}/signin/{token}"
    # HEAD is answered like GET (a redirect that moves the token out of the address).
    head = requests.head(link, timeout=10, allow_redirects=False)
    assert head.status_code == 302
    assert head.headers["Referrer-Policy"] == "no-referrer"
    # Django's own loggers write the path of refused requests: method not allowed
    # (django.request) and a POST without the CSRF cookie (django.security.csrf).
    assert requests.options(link, timeout=10).status_code == 405
    assert requests.post(link, timeout=10).status_code == 403
    assert requests.get(f"{link}/more", timeout=10).status_code == 404
    web.stop()
    web.start("web")  # flushes and reopens the log; the server keeps serving
    log = web.log_path("web").read_text()
    assert "Method Not Allowed (OPTIONS): /signin/[redacted]" in log
    assert "Forbidden (CSRF cookie not set.): /signin/[redacted]" in log
    assert token not in log


def test_a_correctly_signed_chunked_webhook_is_read_whole(web: Stack) -> None:
    event = wa.message_event(wa_id="15550009999", text="sent in chunks")
    body = wa.encode(wa.webhook_payload([event]))

    def chunks() -> Iterator[bytes]:  # requests sends a generator chunked, no Content-Length
        yield body[:50]
        yield body[50:]

    answer = requests.post(
        f"{web.app_url}/whatsapp/webhook",
        data=chunks(),
        headers=wa.webhook_headers(body, APP_SECRET),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    # Kept whole before the 200 (no consumer runs here to fan it out).
    kept = query(web.database_url, "SELECT raw_body FROM whatsapp_webhookdelivery")
    assert kept == [(body.decode(),)]


def test_a_chunked_webhook_with_a_wrong_signature_is_still_refused(web: Stack) -> None:
    body = wa.encode(wa.webhook_payload([wa.message_event(text="forged")]))
    answer = requests.post(
        f"{web.app_url}/whatsapp/webhook",
        data=iter([body]),
        headers=wa.webhook_headers(body, "not-the-app-secret"),
        timeout=10,
    )
    assert answer.status_code == 403


def test_gunicorn_refuses_to_serve_the_sandbox_in_production(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MKA1_", "WHATSAPP_"))},
        "DEBUG": "false",
        "SANDBOX": "true",
        "SECRET_KEY": SECRET_KEY,
        "MKA1_API_KEY": "test-mka1-key-not-real",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "GUNICORN_BIND": "127.0.0.1:0",
    }
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", "python:multichannel.gunicorn"]
    started = subprocess.run(
        [*gunicorn, "multichannel.wsgi"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert started.returncode != 0
    assert "SANDBOX is on while DEBUG is off" in started.stdout + started.stderr
