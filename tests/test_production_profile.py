"""The production profile, for real: gunicorn and a Huey consumer with DEBUG off, on
PostgreSQL and Redis, calling MKA1 and the Graph API over HTTP (a separate sandbox
server plays both), answering a signed webhook."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from multichannel.sandbox import whatsapp as wa
from tests.conftest import need
from tests.processes import (
    APP_SECRET,
    ROOT,
    SECRET_KEY,
    free_port,
    postgres_database,
    reachable,
    wait_for,
)

REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


@pytest.fixture
def database() -> Iterator[str]:
    need(reachable("127.0.0.1", 5432), "PostgreSQL is not running on 127.0.0.1:5432")
    with postgres_database("mc_prod") as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    need(reachable("127.0.0.1", 6379), "Redis is not running on 127.0.0.1:6379")
    import redis

    redis.Redis.from_url(REDIS).flushdb()
    return REDIS


def test_gunicorn_and_a_worker_on_postgres_and_redis_answer_a_webhook(
    database: str, redis_url: str, tmp_path: Path
) -> None:
    sandbox_port, app_port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MKA1_", "WHATSAPP_"))}
    sandbox_env = {
        **base,
        "DEBUG": "true",
        "SANDBOX": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'sandbox.sqlite3'}",
        "REDIS_URL": "",
        "HUEY_SQLITE_PATH": str(tmp_path / "sandbox-queue.sqlite3"),
    }
    production_env = {
        **base,
        "DEBUG": "false",
        "SANDBOX": "false",
        "SECRET_KEY": SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",  # plain HTTP on loopback in this test
        "DATABASE_URL": database,
        "REDIS_URL": redis_url,
        "HUEY_IMMEDIATE": "false",
        "LOG_FORMAT": "json",
        "MKA1_API_KEY": "test-mka1-key-not-real",
        "MKA1_BASE_URL": f"{sandbox_url}/sandbox/mka1",
        "WHATSAPP_GRAPH_URL": f"{sandbox_url}/sandbox/graph",
        "WHATSAPP_VERIFY_TOKEN": "test-verify-token",
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_TOKEN": "test-graph-token-not-real",
        "WHATSAPP_PHONE_NUMBER_ID": "100000000000001",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_BIND": f"127.0.0.1:{app_port}",
    }
    manage = [sys.executable, "manage.py"]
    for env in (sandbox_env, production_env):
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    deploy = subprocess.run(
        [*manage, "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env={**production_env, "SECURE_SSL_REDIRECT": "true"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    logs = tmp_path / "logs.txt"
    with logs.open("w") as log:
        processes = [
            subprocess.Popen(
                [*manage, "runserver", "--noreload", f"127.0.0.1:{sandbox_port}"],
                cwd=ROOT, env=sandbox_env, stdout=log, stderr=subprocess.STDOUT,
            ),
            subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "python:multichannel.gunicorn",
                 "multichannel.wsgi"],
                cwd=ROOT, env=production_env, stdout=log, stderr=subprocess.STDOUT,
            ),
            subprocess.Popen(
                [*manage, "run_huey", "--workers", "2", "--worker-type", "thread"],
                cwd=ROOT, env=production_env, stdout=log, stderr=subprocess.STDOUT,
            ),
        ]  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            app = f"http://127.0.0.1:{app_port}"
            wait_for(f"{sandbox_url}/healthz", deadline)
            wait_for(f"{app}/healthz", deadline)
            assert requests.get(f"{app}/healthz", timeout=5).json() == {
                "status": "ok",
                "database": "ok",
                "queue": "ok",
                "checkpoints": "not configured",
            }
            assert requests.get(f"{app}/sandbox/whatsapp/", timeout=5).status_code == 404
            body = wa.encode(wa.webhook_payload([wa.message_event(text="production ping")]))
            answer = requests.post(
                f"{app}/whatsapp/webhook",
                data=body,
                headers=wa.webhook_headers(body, APP_SECRET),
                timeout=10,
            )
            assert answer.status_code == 200
            assert answer.headers["X-Request-ID"]
            replied = False
            while time.monotonic() < deadline and not replied:
                page = requests.get(f"{sandbox_url}/sandbox/whatsapp/", timeout=5).text
                replied = "You said: production ping" in page
                time.sleep(0.3)
            assert replied, logs.read_text()[-4000:]
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
    verify = subprocess.run(
        [*manage, "verify_audit"], cwd=ROOT, env=production_env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.startswith("OK: 2 events")  # conversations.create, responses.create
    text = logs.read_text()
    assert '"level": "INFO"' in text  # JSON logs
    for secret in ("test-mka1-key-not-real", "test-graph-token-not-real", APP_SECRET):
        assert secret not in text
