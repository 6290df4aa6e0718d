"""`manage.py demo` (the seed scenario, scripted) and `manage.py serve` (web + worker)."""

import os
import re
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError

from multichannel.sandbox.faults import fault_inject
from tests.support.stack import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db(transaction=True)  # a worker's task closes the connection after it
def test_the_demo_passes_on_a_real_queue_with_no_worker_running() -> None:
    """As `manage.py demo` runs for an operator: queued work is not run inline (the
    webhook only keeps the delivery), so the demo runs what it queued itself."""
    from huey.contrib.djhuey import HUEY

    HUEY.immediate = False
    HUEY.flush()
    try:
        out = StringIO()
        call_command("demo", stdout=out)
    finally:
        HUEY.flush()
        HUEY.immediate = True
    assert "Demo passed." in out.getvalue()


@pytest.mark.django_db
def test_the_demo_walks_the_seed_scenario_and_passes() -> None:
    out = StringIO()
    call_command("demo", stdout=out)
    text = out.getvalue()
    steps = (
        "1. WhatsApp",
        "2. WhatsApp",
        "3. Web",
        "4. Unified audit log",
        "5. Evidence",
        "6. Ledger",
    )
    for step in steps:
        assert step in text
    assert (
        'transcribed by MKA1 (speech.transcriptions): "And what is the capital of Italy?"' in text
    )
    assert 'reply sent on WhatsApp: "You said: And what is the capital of Italy?"' in text
    assert text.count('"action":"responses.create"') == 1
    assert text.count('"action":"responses.get"') == 1
    assert text.count("PASS  ") == 4
    assert "OK: " in text
    assert text.rstrip().endswith("Demo passed.")


@pytest.mark.django_db
def test_the_demo_works_whatever_hosts_the_operator_allows(settings) -> None:
    # It posts and browses through the app's own request handling, as the host it
    # serves, not as a test client's "testserver".
    settings.ALLOWED_HOSTS = ["demo.example.test"]
    settings.SITE_URL = "http://127.0.0.1:8765"
    out = StringIO()
    call_command("demo", stdout=out)
    assert out.getvalue().rstrip().endswith("Demo passed.")


@pytest.mark.django_db
def test_the_demo_fails_loudly_when_a_step_fails() -> None:
    fault_inject("responses.get", status=500, times=100)
    with pytest.raises(CommandError, match="answered 502"):
        call_command("demo", stdout=StringIO())


@pytest.mark.django_db
def test_the_demo_refuses_to_run_without_the_sandbox(settings) -> None:
    settings.SANDBOX = False
    with pytest.raises(CommandError, match="sandbox"):
        call_command("demo", stdout=StringIO())


def test_serve_runs_web_and_worker_and_stops_both_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if k != "SITE_URL"},
        "DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        "HUEY_SQLITE_PATH": str(tmp_path / "queue.sqlite3"),
        "HUEY_IMMEDIATE": "false",
        "SANDBOX": "true",
        # An operator who allows only the address they serve on.
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", f"127.0.0.1:{port}", "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = requests.get(f"{base}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert health is not None, "the web server never answered"
        assert health.json()["status"] == "ok"
        # A message typed on the sandbox phone is answered by the worker, not the request.
        sent = subprocess.run(
            [sys.executable, "manage.py", "sandbox_whatsapp", "ping", "--url",
             base],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        page = ""
        while time.monotonic() < deadline:
            page = requests.get(f"{base}/sandbox/whatsapp/", timeout=5).text
            if "You said: ping" in page:
                break
            time.sleep(0.3)
        assert "You said: ping" in page
        # LOGIN typed on the sandbox phone page (which posts the webhook in process):
        # the link points at the address being served, not the default port 8000.
        phone = requests.Session()
        phone.get(f"{base}/sandbox/whatsapp/?phone=15551234567", timeout=5)
        typed = phone.post(
            f"{base}/sandbox/whatsapp/?phone=15551234567",
            data={
                "csrfmiddlewaretoken": phone.cookies["csrftoken"],
                "phone": "15551234567",
                "text": "LOGIN",
            },
            headers={"Origin": base},
            timeout=10,
        )
        assert typed.status_code == 200, typed.text[:500]
        assert "The webhook answered" not in typed.text
        while time.monotonic() < deadline:
            page = requests.get(f"{base}/sandbox/whatsapp/", timeout=5).text
            if "/signin/" in page:
                break
            time.sleep(0.3)
        assert f"{base}/signin/" in page
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert "Stopped." in output
    password = re.search(r"user auditor, password (\S+), shown only this once", output)
    assert password, output
    for url in ("/admin/", "/sandbox/whatsapp/", "/healthz"):
        assert f"{base}{url}" in output
