"""The one shared MKA1 client: built from settings, rebuilt when they change, known to
the audit by its key's fingerprint.
"""

import contextlib
import hashlib
import re

import pytest
import responses
from django.conf import settings
from django.test import override_settings

from multichannel import mka1
from multichannel.mka1 import (
    api_key_fingerprint,
)
from tests.support.mka1 import (
    API,
    BASE,
    KEY,
    RESPONSE,
    USER,
    MakeClient,
    sent_timeout,
)

# --- fingerprint -------------------------------------------------------------------


def test_api_key_fingerprint_is_sha256_prefix_stable_and_key_specific() -> None:
    fingerprint = api_key_fingerprint(KEY)

    assert re.fullmatch(r"sha256:[0-9a-f]{16}", fingerprint)
    assert fingerprint == "sha256:" + hashlib.sha256(KEY.encode()).hexdigest()[:16]
    assert api_key_fingerprint(KEY) == fingerprint
    assert api_key_fingerprint(KEY + "x") != fingerprint
    assert KEY not in fingerprint


def test_the_client_fingerprint_is_the_fingerprint_of_its_key(make_client: MakeClient) -> None:
    assert make_client().key_fingerprint == api_key_fingerprint(KEY)
    assert make_client(api_key="another-key").key_fingerprint != api_key_fingerprint(KEY)


# --- the shared client -------------------------------------------------------------

_REAL_SETTINGS = {
    "MKA1_API_KEY": "settings-key-not-real",
    "MKA1_BASE_URL": f"{BASE}/",
    "MKA1_MODEL": "model-from-settings",
    "MKA1_TIMEOUT": 11.0,
    "MKA1_CONNECT_TIMEOUT": 3.0,
    "MKA1_MAX_RETRIES": 1,
    "MKA1_BACKOFF_SECONDS": 0.25,
    "MKA1_BACKOFF_MAX_SECONDS": 2.0,
    "MKA1_CHAIN_MODE": "conversation",
}


def test_the_shared_client_is_built_from_settings() -> None:
    with override_settings(**_REAL_SETTINGS):
        shared = mka1.client()

    assert shared.base_url == BASE
    assert shared.model == "model-from-settings"
    assert shared.timeout == (3.0, 11.0)
    assert shared.max_retries == 1
    assert shared.backoff == 0.25
    assert shared.backoff_max == 2.0
    assert shared.chain_mode == "conversation"
    assert shared.key_fingerprint == api_key_fingerprint("settings-key-not-real")
    assert shared.session.trust_env is False


@pytest.mark.django_db  # the shared client checks the ledger can record before each call
def test_the_shared_client_sends_the_key_from_settings(mocked: responses.RequestsMock) -> None:
    mocked.add("GET", f"{API}/responses/resp_abc123", json=RESPONSE)

    with override_settings(**_REAL_SETTINGS):
        mka1.client().get_response(USER, "resp_abc123")

    assert mocked.calls[0].request.headers["Authorization"] == "Bearer settings-key-not-real"
    assert sent_timeout(mocked.calls[0]) == (3.0, 11.0)


def test_the_shared_client_is_one_instance_until_mka1_settings_change() -> None:
    outer = mka1.client()
    assert mka1.client() is outer

    with override_settings(MKA1_MODEL="model-overridden"):
        inner = mka1.client()
        assert inner is not outer
        assert inner.model == "model-overridden"
        assert mka1.client() is inner

    after = mka1.client()
    assert after is not inner
    assert after.model == settings.MKA1_MODEL


def test_the_shared_client_follows_an_overridden_key() -> None:
    with override_settings(MKA1_API_KEY="first-key-not-real"):
        first = mka1.client().key_fingerprint
    with override_settings(MKA1_API_KEY="second-key-not-real"):
        second = mka1.client().key_fingerprint

    assert first == api_key_fingerprint("first-key-not-real")
    assert second == api_key_fingerprint("second-key-not-real")


def test_the_shared_client_reaches_the_sandbox_in_process() -> None:
    from multichannel.sandbox.transport import InProcessAdapter

    with override_settings(MKA1_BASE_URL="sandbox://mka1"):
        adapter = mka1.client().session.get_adapter("sandbox://mka1/api/v1/llm/responses")

    assert isinstance(adapter, InProcessAdapter)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("pooled", "in_transaction", "handed_back"), [
    (True, False, True), (True, True, False), (False, False, False),
])  # fmt: skip
def test_a_pooled_connection_is_handed_back_for_an_outside_call(
    monkeypatch: pytest.MonkeyPatch,
    pooled: bool,
    in_transaction: bool,
    handed_back: bool,
) -> None:
    # A consumer thread waiting on MKA1 (or the Graph API) holds no pooled connection,
    # so more threads can wait than the database takes connections; never inside a
    # transaction, which the connection must carry.
    from django.db import connection, transaction

    from multichannel import http

    closes: list[bool] = []
    monkeypatch.setattr(http, "database_pooled", lambda: pooled)
    monkeypatch.setattr(connection, "close", lambda: closes.append(connection.in_atomic_block))
    with transaction.atomic() if in_transaction else contextlib.nullcontext():
        assert mka1.client().create_conversation("end-user-1").id.startswith("conv_")
    assert closes == ([False] if handed_back else [])
