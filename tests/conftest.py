"""Shared fixtures. Outgoing HTTP is faked with `responses` or served by the in-process
sandbox; nothing here talks to the internet."""

import json
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import responses
from django.test import Client

from audit.notes import SignerKey, generate_key
from multichannel import mka1
from multichannel.models import EndUser
from multichannel.sandbox import whatsapp as wa
from multichannel.services import end_user_create
from tests.support import mka1 as fake_mka1
from tests.support.ci import in_ci
from tests.support.outgoing import Calls
from tests.support.webhooks import PostWebhook, Signature, webhook_post, whatsapp_say
from whatsapp.graph import graph_client


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    # The shared clients are cached per process; each test gets ones built from its settings.
    mka1.client.cache_clear()
    graph_client.cache_clear()
    yield
    mka1.client.cache_clear()
    graph_client.cache_clear()


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    # Rate-limit counters and buckets live in the cache; each test starts with none.
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _media_in_a_scratch_folder(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Files users send are kept in storage; tests keep theirs out of the checkout.
    settings.MEDIA_ROOT = str(tmp_path_factory.mktemp("media"))


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
        sent = Signature.APP_SECRET if signature is None else signature or None
        return webhook_post(body, client=client, signature=sent)

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


@pytest.fixture
def whatsapp_says(client: Client, django_capture_on_commit_callbacks: Any) -> Any:
    """A user sends a WhatsApp text; the queued work runs (Huey immediate mode).
    Returns the stored UserMessage."""
    return partial(whatsapp_say, client=client, on_commit=django_capture_on_commit_callbacks)


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


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    """HTTP faked with `responses`: every registered answer must be asked for."""
    with responses.RequestsMock() as rsps:
        yield rsps


@pytest.fixture
def delays() -> list[float]:
    """The back-off delays a client made with `make_client` would have slept."""
    return []


@pytest.fixture
def make_client(delays: list[float]) -> fake_mka1.MakeClient:
    """An MKA1 client for the fake server at fake_mka1.BASE, sleeping into `delays`."""

    def make(**overrides: Any) -> mka1.Mka1Client:
        options: dict[str, Any] = {
            "api_key": fake_mka1.KEY,
            "base_url": fake_mka1.BASE,
            "model": fake_mka1.MODEL,
            "sleep": delays.append,
            **overrides,
        }
        return mka1.Mka1Client(**options)

    return make


# In CI nothing may skip: a skipped test is not a passing test.
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and in_ci():
        print(f"\nCI=true: {len(_skipped)} test(s) skipped, which fails the run:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
