"""Shared fixtures. Outgoing HTTP is faked with `responses` or served by the in-process
sandbox; nothing here talks to the internet."""

import json
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from audit.notes import SignerKey, generate_key
from multichannel import mka1
from multichannel.models import EndUser
from multichannel.sandbox import whatsapp as wa
from multichannel.sandbox.models import SandboxGraphMessage
from multichannel.services import end_user_create
from whatsapp.graph import graph_client

PostWebhook = Callable[..., Any]
Calls = list[tuple[str, str, dict[str, Any]]]


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    # The shared clients are cached per process; each test gets ones built from its settings.
    mka1.client.cache_clear()
    graph_client.cache_clear()
    yield
    mka1.client.cache_clear()
    graph_client.cache_clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # Real hashing is deliberately slow; tests only need passwords to work.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def no_backoff_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry back-off is recorded instead of slept: tests drive time explicitly."""
    slept: list[float] = []
    monkeypatch.setattr(mka1.client(), "_sleep", slept.append)
    monkeypatch.setattr(graph_client(), "_sleep", slept.append)
    return slept


@pytest.fixture(autouse=True)
def _audit_triggers_out_of_the_way_of_flush(request: pytest.FixtureRequest) -> Iterator[None]:
    """Transactional tests end with a flush (DELETE/TRUNCATE of every table), which the
    audit table's append-only triggers rightly refuse. Lift them for that flush only;
    they are back (idempotently) before the next test touches the database."""
    marker = request.node.get_closest_marker("django_db")
    transactional = bool(marker and marker.kwargs.get("transaction")) or (
        "transactional_db" in request.fixturenames or "live_server" in request.fixturenames
    )
    if not transactional:
        yield
        return
    from django.db import connection

    from audit.triggers import triggers_install, triggers_uninstall

    request.getfixturevalue("transactional_db")
    triggers_install(connection)
    yield
    triggers_uninstall(connection)


@pytest.fixture
def audit_key(settings: Any) -> SignerKey:
    """A signing key for checkpoints, configured as AUDIT_SIGNING_KEY."""
    key = generate_key("multichannel.test/audit")
    settings.AUDIT_SIGNING_KEY = key.text
    return key


@pytest.fixture
def public_key_file(audit_key: SignerKey, tmp_path: Any) -> str:
    path = tmp_path / "public.key"
    path.write_text(audit_key.verifier.text + "\n")
    return str(path)


@pytest.fixture
def without_triggers(db: None) -> Iterator[None]:
    """An operator with DDL rights: the append-only triggers are dropped before tampering."""
    from django.db import connection

    from audit.triggers import triggers_install, triggers_uninstall

    triggers_uninstall(connection)
    yield
    triggers_install(connection)


@pytest.fixture
def end_user(db: None) -> EndUser:
    return end_user_create()


@pytest.fixture
def post_webhook(client: Client) -> PostWebhook:
    """POST a payload to the webhook, signed with the app secret unless told otherwise
    (`signature=""` sends no signature header at all)."""

    def post(payload: Any = None, *, signature: str | None = None, raw: bytes | None = None) -> Any:
        body = raw if raw is not None else wa.encode(payload)
        if signature is None:
            signature = wa.sign(body, settings.WHATSAPP_APP_SECRET)
        headers = {"X-Hub-Signature-256": signature} if signature else {}
        return client.post(
            "/whatsapp/webhook", data=body, content_type="application/json", headers=headers
        )

    return post


@pytest.fixture
def mka1_calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Every MKA1 call made through the shared client's seam: (method, path, body)."""
    calls: Calls = []
    original = mka1.Mka1Client.request

    def spy(self: mka1.Mka1Client, method: str, path: str, **kwargs: Any) -> mka1.Mka1Object:
        calls.append((method, path, json.loads(json.dumps(kwargs.get("json_body") or {}))))
        return original(self, method, path, **kwargs)

    monkeypatch.setattr(mka1.Mka1Client, "request", spy)
    return calls


def response_creates(calls: Calls) -> list[dict[str, Any]]:
    return [body for method, path, body in calls if (method, path) == ("POST", "/responses")]


def sent_texts(recipient: str | None = None) -> list[str]:
    """Reply texts the Graph API stand-in received, oldest first."""
    sent = SandboxGraphMessage.objects.filter(kind="text")
    if recipient is not None:
        sent = sent.filter(recipient=recipient)
    return [message.body["text"]["body"] for message in sent]


@pytest.fixture
def whatsapp_says(post_webhook: PostWebhook, django_capture_on_commit_callbacks: Any) -> Any:
    """A user sends a WhatsApp text; the queued work runs (Huey immediate mode).
    Returns the stored UserMessage."""
    from multichannel.models import UserMessage

    def say(text: str, *, wa_id: str = "15551234567", run: bool = True) -> UserMessage:
        event = wa.message_event(wa_id=wa_id, text=text)
        with django_capture_on_commit_callbacks(execute=run):
            assert post_webhook(wa.webhook_payload([event])).status_code == 200
        return UserMessage.objects.get(external_id=event["message"]["id"])

    return say


@pytest.fixture
def web_client(db: None) -> Callable[[EndUser], Client]:
    """A browser session signed in as the given end user."""

    def signed_in(end_user: EndUser, **kwargs: Any) -> Client:
        browser = Client(**kwargs)
        session = browser.session
        session["end_user_id"] = end_user.pk
        session.save()
        return browser

    return signed_in


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run each call in a thread of its own (so a database connection of its own), all
    released together; what each returned, or the exception it raised, in call order."""
    from django.db import connection

    results: list[Any] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = calls[index]()
        except BaseException as exc:  # reported to the test
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def webhook_deliver(body: bytes) -> int:
    """POST a body signed with the app secret from a new client; the status code."""
    answer = Client().post(
        "/whatsapp/webhook",
        data=body,
        content_type="application/json",
        headers={"X-Hub-Signature-256": wa.sign(body, settings.WHATSAPP_APP_SECRET)},
    )
    return int(answer.status_code)


def need(available: bool, reason: str) -> None:
    """Skip a test whose service or tool is missing, except in CI (CI=true), where
    everything must run: a skipped test there is a failure."""
    if available:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


# In CI nothing may skip: a skipped test is not a passing test.
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and os.environ.get("CI", "").lower() == "true":
        print(f"\nCI=true: {len(_skipped)} test(s) skipped, which fails the run:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
