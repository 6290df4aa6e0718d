"""The MKA1 seam: exact wire format, retry policy, error classes, and a key that never leaks.

HTTP is faked with `responses`; every client gets a recording `sleep`, so no test waits.
"""

import email.utils
import hashlib
import json
import logging
import re
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses
from django.conf import settings
from django.test import override_settings
from meetkai_mka1.models.createconversationrequest import CreateConversationRequest
from meetkai_mka1.models.responsescreaterequest import ResponsesCreateRequest
from pydantic import BaseModel
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError, ProtocolError

from multichannel import mka1
from multichannel.mka1 import (
    Mka1AuthError,
    Mka1Client,
    Mka1ConnectionError,
    Mka1ConversationBusyError,
    Mka1Error,
    Mka1InvalidRequestError,
    Mka1NotFoundError,
    Mka1PermanentError,
    Mka1RateLimitError,
    Mka1ServerError,
    Mka1TimeoutError,
    Mka1TransientError,
    api_key_fingerprint,
)

BASE = "https://mka1.test"
API = f"{BASE}/api/v1/llm"
KEY = "test-mka1-key-not-real"
USER = "end-user-42"
MODEL = "meetkai:test-model"
RESPONSE = {"id": "resp_abc123", "object": "response", "output": [], "output_text": "hi"}
ANY_URL = re.compile(r"https://mka1\.test/.*")

MakeClient = Callable[..., Mka1Client]


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as rsps:
        yield rsps


@pytest.fixture
def delays() -> list[float]:
    return []


@pytest.fixture
def make_client(delays: list[float]) -> MakeClient:
    def make(**overrides: Any) -> Mka1Client:
        options: dict[str, Any] = {
            "api_key": KEY,
            "base_url": BASE,
            "model": MODEL,
            "sleep": delays.append,
            **overrides,
        }
        return Mka1Client(**options)

    return make


def mka1_error(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def refused() -> requests.ConnectionError:
    # The shape requests gives for ECONNREFUSED: ConnectionError(MaxRetryError(reason=...)).
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] refused")  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, "/api", reason))  # type: ignore[arg-type]


def unresolved() -> requests.ConnectionError:
    reason = NameResolutionError("mka1.test", None, socket.gaierror(-2, "Name unknown"))  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, "/api", reason))  # type: ignore[arg-type]


def lost() -> requests.ConnectionError:
    # The shape requests gives when the peer resets a connection after the request went out.
    return requests.ConnectionError(
        ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    )


def sent_json(call: Any) -> dict[str, Any]:
    body = call.request.body
    assert isinstance(body, bytes)
    parsed = json.loads(body)
    assert isinstance(parsed, dict)
    return parsed


def sent_timeout(call: Any) -> Any:
    # `responses` records the keyword arguments the session passed to the adapter.
    return call.request.req_kwargs["timeout"]


def assert_sdk_request(model: type[BaseModel], body: dict[str, Any]) -> Any:
    """Valid for the official SDK model, and no key the model does not know (it ignores extras)."""
    validated = model.model_validate(body)
    known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    assert set(body) <= known, f"keys unknown to {model.__name__}: {set(body) - known}"
    return validated


def create_response(client: Mka1Client, previous: str | None = "resp_prev1") -> mka1.Mka1Object:
    return client.create_response(
        USER,
        conversation_id="conv_1",
        message="hello",
        previous_response_id=previous,
        channel="whatsapp",
    )


# --- headers and paths -------------------------------------------------------------

CALLS: list[tuple[str, str, str, Callable[[Mka1Client], object]]] = [
    (
        "create_conversation",
        "POST",
        "/api/v1/llm/conversations",
        lambda c: c.create_conversation(USER),
    ),
    ("create_response", "POST", "/api/v1/llm/responses", create_response),
    (
        "get_response",
        "GET",
        "/api/v1/llm/responses/resp_abc123",
        lambda c: c.get_response(USER, "resp_abc123"),
    ),
    (
        "get_conversation_item",
        "GET",
        "/api/v1/llm/conversations/conv_1/items/msg_9",
        lambda c: c.get_conversation_item(USER, "conv_1", "msg_9"),
    ),
    (
        "list_conversation_items",
        "GET",
        "/api/v1/llm/conversations/conv_1/items?order=asc",
        lambda c: c.list_conversation_items(USER, "conv_1"),
    ),
]


@pytest.mark.parametrize(("name", "method", "path", "call"), CALLS, ids=[c[0] for c in CALLS])
def test_every_call_sends_bearer_and_on_behalf_of_to_the_exact_path(
    mocked: responses.RequestsMock,
    make_client: MakeClient,
    name: str,
    method: str,
    path: str,
    call: Callable[[Mka1Client], object],
) -> None:
    mocked.add(method, ANY_URL, json=RESPONSE)

    call(make_client())

    assert len(mocked.calls) == 1
    request = mocked.calls[0].request
    assert request.method == method
    assert request.url == f"{BASE}{path}"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["X-On-Behalf-Of"] == USER
    assert request.headers["Accept"] == "application/json"
    if method == "POST":
        assert request.headers["Content-Type"] == "application/json"


def test_a_trailing_slash_on_the_base_url_does_not_double_the_slash(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    mocked.add("GET", ANY_URL, json=RESPONSE)

    make_client(base_url=f"{BASE}/").get_response(USER, "resp_abc123")

    assert mocked.calls[0].request.url == f"{API}/responses/resp_abc123"


def test_listing_items_sends_order_limit_and_cursor_as_query(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    mocked.add("GET", f"{API}/conversations/conv_1/items", json={"object": "list", "data": []})

    make_client().list_conversation_items(USER, "conv_1", limit=20, after="msg_3", order="desc")

    query = urlsplit(mocked.calls[0].request.path_url).query
    assert dict(parse_qsl(query)) == {"order": "desc", "limit": "20", "after": "msg_3"}


def test_a_call_without_an_end_user_id_is_refused_before_any_http(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    with pytest.raises(ValueError, match="X-On-Behalf-Of"):
        make_client().get_response("", "resp_abc123")
    assert len(mocked.calls) == 0


def test_an_empty_api_key_is_refused_at_construction(make_client: MakeClient) -> None:
    with pytest.raises(ValueError, match="empty"):
        make_client(api_key="")


def test_the_answer_keeps_the_body_exactly_as_received(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    raw = '{"id": "resp_abc123",   "output_text": "caf\u00e9"}'
    mocked.add(
        "GET", f"{API}/responses/resp_abc123", body=raw.encode(), content_type="application/json"
    )

    answer = make_client().get_response(USER, "resp_abc123")

    assert answer.raw == raw
    assert answer.data == {"id": "resp_abc123", "output_text": "café"}
    assert answer.id == "resp_abc123"


# --- request bodies against the official SDK ------------------------------------------


def test_create_response_body_is_a_valid_sdk_request_with_no_unknown_keys(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    mocked.add("POST", f"{API}/responses", json=RESPONSE)

    make_client().create_response(
        USER,
        conversation_id="conv_1",
        message="hello",
        previous_response_id="resp_prev1",
        channel="webapp",
        metadata={"wamid": "wamid.1"},
    )

    body = sent_json(mocked.calls[0])
    sdk = assert_sdk_request(ResponsesCreateRequest, body)
    assert sdk.model == MODEL
    assert sdk.input == "hello"
    assert sdk.store is True
    assert sdk.stream is False
    assert sdk.metadata == {"wamid": "wamid.1", "channel": "webapp"}
    # Explicit on the wire, not left to server defaults.
    assert body["store"] is True
    assert body["stream"] is False


def test_the_channel_in_metadata_cannot_be_overridden_by_the_caller(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    mocked.add("POST", f"{API}/responses", json=RESPONSE)

    make_client().create_response(
        USER,
        conversation_id="conv_1",
        message="hello",
        previous_response_id=None,
        channel="whatsapp",
        metadata={"channel": "webapp"},
    )

    assert sent_json(mocked.calls[0])["metadata"] == {"channel": "whatsapp"}


def test_the_body_is_compact_utf8_json(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    mocked.add("POST", f"{API}/responses", json=RESPONSE)

    make_client().create_response(
        USER,
        conversation_id="conv_1",
        message="héllo 👋",
        previous_response_id=None,
        channel="whatsapp",
    )

    body = mocked.calls[0].request.body
    assert isinstance(body, bytes)
    assert "héllo 👋".encode() in body
    assert b", " not in body
    assert b": " not in body


@pytest.mark.parametrize("metadata", [None, {"end_user": "42"}])
def test_create_conversation_body_is_a_valid_sdk_request_with_no_unknown_keys(
    mocked: responses.RequestsMock, make_client: MakeClient, metadata: dict[str, str] | None
) -> None:
    mocked.add("POST", f"{API}/conversations", json={"id": "conv_1", "object": "conversation"})

    answer = make_client().create_conversation(USER, metadata=metadata)

    body = sent_json(mocked.calls[0])
    sdk = assert_sdk_request(CreateConversationRequest, body)
    assert sdk.metadata == metadata
    assert body == ({"metadata": metadata} if metadata else {})
    assert answer.id == "conv_1"


# --- chain modes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "previous", "expected"),
    [
        ("both", "resp_prev1", {"conversation": "conv_1", "previous_response_id": "resp_prev1"}),
        ("both", None, {"conversation": "conv_1"}),
        ("conversation", "resp_prev1", {"conversation": "conv_1"}),
        ("conversation", None, {"conversation": "conv_1"}),
        ("previous_response_id", "resp_prev1", {"previous_response_id": "resp_prev1"}),
        ("previous_response_id", None, {"conversation": "conv_1"}),
    ],
)
def test_chain_mode_decides_which_of_conversation_and_previous_response_id_is_sent(
    mocked: responses.RequestsMock,
    make_client: MakeClient,
    mode: str,
    previous: str | None,
    expected: dict[str, str],
) -> None:
    mocked.add("POST", f"{API}/responses", json=RESPONSE)

    create_response(make_client(chain_mode=mode), previous)

    body = sent_json(mocked.calls[0])
    assert_sdk_request(ResponsesCreateRequest, body)
    chain = {k: body[k] for k in ("conversation", "previous_response_id") if k in body}
    assert chain == expected


# --- retry policy ------------------------------------------------------------------


@pytest.mark.parametrize("failure", [refused, unresolved], ids=["refused", "dns"])
def test_a_connection_that_never_reached_the_server_is_retried_even_for_a_post(
    mocked: responses.RequestsMock,
    make_client: MakeClient,
    delays: list[float],
    failure: Callable[[], Exception],
) -> None:
    mocked.add("POST", f"{API}/responses", body=failure())
    mocked.add("POST", f"{API}/responses", json=RESPONSE)

    answer = create_response(make_client())

    assert answer.id == "resp_abc123"
    assert len(mocked.calls) == 2
    assert len(delays) == 1


def test_a_real_refused_connection_is_recognised_as_never_reaching_the_server(
    delays: list[float],
) -> None:
    # Proves the faked exception shape above matches what requests really raises.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Mka1Client(
        api_key=KEY,
        base_url=f"http://127.0.0.1:{port}",
        model=MODEL,
        max_retries=1,
        connect_timeout=0.5,
        timeout=0.5,
        sleep=delays.append,
    )

    with pytest.raises(Mka1ConnectionError, match="could not connect") as caught:
        create_response(client)

    assert caught.value.retry_safe is True
    assert len(delays) == 1


def test_a_connection_lost_after_a_post_was_sent_is_not_repeated(
    mocked: responses.RequestsMock, make_client: MakeClient, delays: list[float]
) -> None:
    mocked.add("POST", f"{API}/responses", body=lost())

    with pytest.raises(Mka1ConnectionError, match="connection lost") as caught:
        create_response(make_client())

    assert len(mocked.calls) == 1
    assert delays == []
    assert caught.value.transient is True
    assert caught.value.retry_safe is False


def test_a_connection_lost_on_a_get_is_retried(
    mocked: responses.RequestsMock, make_client: MakeClient, delays: list[float]
) -> None:
    mocked.add("GET", f"{API}/responses/resp_abc123", body=lost())
    mocked.add("GET", f"{API}/responses/resp_abc123", json=RESPONSE)

    assert make_client().get_response(USER, "resp_abc123").id == "resp_abc123"
    assert len(mocked.calls) == 2
    assert len(delays) == 1


def test_a_connect_timeout_on_a_post_is_retried(
    mocked: responses.RequestsMock, make_client: MakeClient, delays: list[float]
) -> None:
    mocked.add("POST", f"{API}/responses", body=requests.ConnectTimeout())
    mocked.add("POST", f"{API}/responses", json=RESPONSE)

    assert create_response(make_client()).id == "resp_abc123"
    assert len(mocked.calls) == 2


def test_rate_limit_waits_exactly_as_long_as_retry_after_says(
    mocked: responses.RequestsMock, make_client: MakeClient, delays: list[float]
) -> None:
    mocked.add(
        "POST",
        f"{API}/responses",
        status=429,
        json=mka1_error("slow down"),
        headers={"Retry-After": "7"},
    )
    mocked.add("POST", f"{API}/responses", json=RESPONSE)

    assert create_response(make_client(backoff_max=30.0)).id == "resp_abc123"

    assert delays == [7.0]
    assert len(mocked.calls) == 2


def test_retry_after_as_an_http_date_is_honoured(
    mocked: responses.RequestsMock, make_client: MakeClient, delays: list[float]
) -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    mocked.add("GET", f"{API}/responses/resp_abc123", status=503, headers={"Retry-After": when})
    mocked.add("GET", f"{API}/responses/resp_abc123", json=RESPONSE)

    make_client(backoff_max=30.0).get_response(USER, "resp_abc123")

    assert len(delays) == 1
    assert 8.0 < delays[0] <= 10.0


def test_rate_limit_asking_for_more_than_backoff_max_raises_at_once(
    mocked: responses.RequestsMock, make_client: MakeClient, delays: list[float]
) -> None:
    mocked.add(
        "POST",
        f"{API}/responses",
        status=429,
        json=mka1_error("later"),
        headers={"Retry-After": "120"},
    )

    with pytest.raises(Mka1RateLimitError) as caught:
        create_response(make_client(backoff_max=30.0))

    assert len(mocked.calls) == 1
    assert delays == []
    assert caught.value.retry_after == 120.0
    assert caught.value.transient is True


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried_then_succeed(
    mocked: responses.RequestsMock, make_client: MakeClient, delays: list[float], status: int
) -> None:
    mocked.add("POST", f"{API}/responses", status=status, json=mka1_error("oops", "server_error"))
    mocked.add("POST", f"{API}/responses", json=RESPONSE)

    assert create_response(make_client()).id == "resp_abc123"
    assert len(mocked.calls) == 2
    assert len(delays) == 1


def test_retries_stop_after_max_retries_and_the_last_error_is_raised(
    mocked: responses.RequestsMock, make_client: MakeClient, delays: list[float]
) -> None:
    mocked.add("GET", f"{API}/responses/resp_abc123", status=500, json=mka1_error("first"))
    mocked.add("GET", f"{API}/responses/resp_abc123", status=502, json=mka1_error("second"))
    mocked.add("GET", f"{API}/responses/resp_abc123", status=503, json=mka1_error("third"))

    with pytest.raises(Mka1ServerError) as caught:
        make_client(max_retries=2).get_response(USER, "resp_abc123")

    assert len(mocked.calls) == 3
    assert len(delays) == 2
    assert caught.value.status == 503
    assert "third" in str(caught.value)


def test_max_retries_zero_makes_exactly_one_call(
    mocked: responses.RequestsMock, make_client: MakeClient, delays: list[float]
) -> None:
    mocked.add("GET", f"{API}/responses/resp_abc123", status=503)

    with pytest.raises(Mka1ServerError):
        make_client(max_retries=0).get_response(USER, "resp_abc123")

    assert len(mocked.calls) == 1
    assert delays == []


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, Mka1InvalidRequestError),
        (401, Mka1AuthError),
        (403, Mka1AuthError),
        (404, Mka1NotFoundError),
        (409, Mka1InvalidRequestError),
        (422, Mka1InvalidRequestError),
    ],
)
def test_client_errors_are_permanent_and_never_retried(
    mocked: responses.RequestsMock,
    make_client: MakeClient,
    delays: list[float],
    status: int,
    error_class: type[Mka1Error],
) -> None:
    mocked.add("POST", f"{API}/responses", status=status, json=mka1_error("no"))

    with pytest.raises(error_class) as caught:
        create_response(make_client())

    assert type(caught.value) is error_class
    assert caught.value.transient is False
    assert caught.value.status == status
    assert len(mocked.calls) == 1
    assert delays == []


def test_a_read_timeout_on_a_get_is_retried(
    mocked: responses.RequestsMock, make_client: MakeClient, delays: list[float]
) -> None:
    mocked.add("GET", f"{API}/responses/resp_abc123", body=requests.ReadTimeout())
    mocked.add("GET", f"{API}/responses/resp_abc123", json=RESPONSE)

    assert make_client().get_response(USER, "resp_abc123").id == "resp_abc123"
    assert len(mocked.calls) == 2
    assert len(delays) == 1


def test_a_read_timeout_on_a_post_is_not_repeated_but_is_transient(
    mocked: responses.RequestsMock, make_client: MakeClient, delays: list[float]
) -> None:
    mocked.add("POST", f"{API}/responses", body=requests.ReadTimeout())

    with pytest.raises(Mka1TimeoutError) as caught:
        create_response(make_client(timeout=9.0))

    assert len(mocked.calls) == 1
    assert delays == []
    assert caught.value.transient is True
    assert caught.value.retry_safe is False
    assert "9.0s" in str(caught.value)


def test_each_retry_is_logged_as_a_warning(
    mocked: responses.RequestsMock,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mocked.add("GET", f"{API}/responses/resp_abc123", status=503)

    with (
        caplog.at_level(logging.WARNING, logger="multichannel.mka1"),
        pytest.raises(Mka1ServerError),
    ):
        make_client(max_retries=2).get_response(USER, "resp_abc123")

    retries = [r for r in caplog.records if r.name == "multichannel.mka1"]
    assert [r.levelno for r in retries] == [logging.WARNING, logging.WARNING]
    assert "retry 1/2" in retries[0].getMessage()
    assert "retry 2/2" in retries[1].getMessage()


# --- backoff -----------------------------------------------------------------------


def _always_503(mocked: responses.RequestsMock) -> None:
    mocked.add("GET", f"{API}/responses/resp_abc123", status=503)


def test_backoff_grows_and_each_delay_stays_within_half_cap_and_cap(
    mocked: responses.RequestsMock, make_client: MakeClient, delays: list[float]
) -> None:
    _always_503(mocked)
    client = make_client(max_retries=8, backoff=0.5, backoff_max=10.0)

    with pytest.raises(Mka1ServerError):
        client.get_response(USER, "resp_abc123")

    caps = [min(10.0, 0.5 * 2**attempt) for attempt in range(8)]
    assert len(delays) == 8
    for delay, cap in zip(delays, caps, strict=True):
        assert cap / 2 <= delay <= cap
    # Until the cap plateaus the jitter windows do not overlap, so delays never shrink.
    growing = delays[:5]
    assert growing == sorted(growing)
    assert delays[4] > delays[0]


@pytest.mark.parametrize("pick", ["low", "high"])
def test_backoff_jitter_window_is_exactly_half_cap_to_cap(
    mocked: responses.RequestsMock,
    make_client: MakeClient,
    delays: list[float],
    monkeypatch: pytest.MonkeyPatch,
    pick: str,
) -> None:
    windows: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        windows.append((low, high))
        return low if pick == "low" else high

    monkeypatch.setattr("multichannel.mka1.random.uniform", uniform)
    _always_503(mocked)

    with pytest.raises(Mka1ServerError):
        make_client(max_retries=6, backoff=0.5, backoff_max=5.0).get_response(USER, "resp_abc123")

    caps = [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert windows == [(cap / 2, cap) for cap in caps]
    assert delays == [cap / 2 if pick == "low" else cap for cap in caps]


def test_rate_limit_without_retry_after_falls_back_to_backoff(
    mocked: responses.RequestsMock, make_client: MakeClient, delays: list[float]
) -> None:
    mocked.add("POST", f"{API}/responses", status=429, json=mka1_error("slow down"))
    mocked.add("POST", f"{API}/responses", json=RESPONSE)

    create_response(make_client(backoff=2.0))

    assert len(delays) == 1
    assert 1.0 <= delays[0] <= 2.0


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_class", "transient"),
    [
        (Mka1Error, False),
        (Mka1PermanentError, False),
        (Mka1NotFoundError, False),
        (Mka1AuthError, False),
        (Mka1InvalidRequestError, False),
        (Mka1TransientError, True),
        (Mka1ConnectionError, True),
        (Mka1TimeoutError, True),
        (Mka1RateLimitError, True),
        (Mka1ServerError, True),
        (Mka1ConversationBusyError, True),
    ],
)
def test_each_error_class_says_whether_it_is_transient(
    error_class: type[Mka1Error], transient: bool
) -> None:
    error = error_class("x")
    assert error.transient is transient
    assert isinstance(error, Mka1Error)
    if error_class is not Mka1Error:
        assert isinstance(error, Mka1TransientError if transient else Mka1PermanentError)


def test_an_error_carries_status_and_the_parsed_mka1_error_body(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    payload = mka1_error("model is required")
    mocked.add("POST", f"{API}/responses", status=400, json=payload)

    with pytest.raises(Mka1InvalidRequestError) as caught:
        create_response(make_client())

    assert caught.value.status == 400
    assert caught.value.body == payload
    assert "HTTP 400" in str(caught.value)
    assert "model is required" in str(caught.value)
    assert "/responses" in str(caught.value)


def test_a_non_json_error_body_is_kept_as_text(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    mocked.add("GET", f"{API}/responses/resp_abc123", status=502, body="<html>Bad gateway</html>")

    with pytest.raises(Mka1ServerError) as caught:
        make_client(max_retries=0).get_response(USER, "resp_abc123")

    assert caught.value.body == "<html>Bad gateway</html>"


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (409, mka1_error("Conversation is locked by another request", "conflict")),
        (409, {"error": {"message": "Another response is in_progress", "type": "conflict"}}),
        (409, mka1_error("conversation busy", "conflict")),
        (423, mka1_error("Locked")),
        (423, {}),
    ],
)
def test_a_locked_or_busy_conversation_is_transient_and_retried(
    mocked: responses.RequestsMock,
    make_client: MakeClient,
    delays: list[float],
    status: int,
    payload: dict[str, Any],
) -> None:
    mocked.add("POST", f"{API}/responses", status=status, json=payload)

    with pytest.raises(Mka1ConversationBusyError) as caught:
        create_response(make_client(max_retries=1))

    assert caught.value.transient is True
    assert caught.value.status == status
    assert len(mocked.calls) == 2
    assert len(delays) == 1


def test_a_408_is_a_transient_timeout(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    mocked.add("GET", f"{API}/responses/resp_abc123", status=408)

    with pytest.raises(Mka1TimeoutError):
        make_client(max_retries=0).get_response(USER, "resp_abc123")


@pytest.mark.parametrize("body", ["<html>ok</html>", "[1, 2]", ""])
def test_a_success_status_with_a_body_that_is_not_a_json_object_is_permanent(
    mocked: responses.RequestsMock, make_client: MakeClient, delays: list[float], body: str
) -> None:
    mocked.add("POST", f"{API}/responses", status=200, body=body)

    with pytest.raises(Mka1PermanentError) as caught:
        create_response(make_client())

    assert caught.value.transient is False
    assert caught.value.status == 200
    assert len(mocked.calls) == 1
    assert delays == []


def test_a_redirect_is_not_followed(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    # Following it would carry the end user's request (and our auth) somewhere unchecked.
    mocked.add(
        "GET",
        f"{API}/responses/resp_abc123",
        status=302,
        headers={"Location": "https://elsewhere.test/"},
    )

    with pytest.raises(Mka1PermanentError) as caught:
        make_client().get_response(USER, "resp_abc123")

    assert caught.value.status == 302
    assert len(mocked.calls) == 1


# --- timeouts ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "method", "path", "call"), CALLS, ids=[c[0] for c in CALLS])
def test_the_session_receives_connect_and_read_timeouts(
    mocked: responses.RequestsMock,
    make_client: MakeClient,
    name: str,
    method: str,
    path: str,
    call: Callable[[Mka1Client], object],
) -> None:
    mocked.add(method, ANY_URL, json=RESPONSE)

    call(make_client(connect_timeout=2.5, timeout=17.0))

    assert sent_timeout(mocked.calls[0]) == (2.5, 17.0)


# --- the key never leaks -----------------------------------------------------------


def _assert_no_key(error: Mka1Error) -> None:
    assert KEY not in str(error)
    assert KEY not in repr(error)
    assert KEY not in repr(error.args)
    assert KEY not in json.dumps(error.body)


@pytest.mark.parametrize(
    "echo",
    [
        {"json": {"error": {"message": f"Invalid API key {KEY}", "type": "auth"}, "key": KEY}},
        {"json": {"message": f"Bearer {KEY} rejected"}},
        {"body": f"unauthorized: Authorization: Bearer {KEY}"},
    ],
    ids=["nested-json", "flat-json", "text"],
)
def test_the_key_never_appears_in_an_error_even_when_the_server_echoes_it(
    mocked: responses.RequestsMock, make_client: MakeClient, echo: dict[str, Any]
) -> None:
    mocked.add("POST", f"{API}/responses", status=401, **echo)

    with pytest.raises(Mka1AuthError) as caught:
        create_response(make_client())

    _assert_no_key(caught.value)
    assert "***" in json.dumps(caught.value.body)


def test_the_key_never_appears_in_an_error_even_when_the_reason_phrase_echoes_it(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client()

    def answer(*args: Any, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = 401
        response.reason = f"Bad key {KEY}"
        response._content = b""
        return response

    monkeypatch.setattr(client.session, "request", answer)

    with pytest.raises(Mka1AuthError) as caught:
        client.get_response(USER, "resp_abc123")

    _assert_no_key(caught.value)


def test_the_key_never_appears_in_the_client_repr(make_client: MakeClient) -> None:
    client = make_client()

    assert KEY not in repr(client)
    assert client.key_fingerprint in repr(client)


def test_the_key_never_appears_in_logs_during_retries(
    mocked: responses.RequestsMock,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mocked.add("GET", f"{API}/responses/resp_abc123", status=503, json=mka1_error(f"bad {KEY}"))
    mocked.add("GET", f"{API}/responses/resp_abc123", body=requests.ReadTimeout())
    mocked.add("GET", f"{API}/responses/resp_abc123", status=429, body=f"slow {KEY}")

    with caplog.at_level(logging.DEBUG), pytest.raises(Mka1RateLimitError) as caught:
        make_client(max_retries=2).get_response(USER, "resp_abc123")

    assert len(caplog.records) >= 2
    for record in caplog.records:
        assert KEY not in record.getMessage()
    assert KEY not in caplog.text
    _assert_no_key(caught.value)


# --- ids and paths -----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        "resp",
        "resp_",
        "response_abc",
        "RESP_abc",
        "msg_abc123",
        "resp_abc/../x",
        "resp_abc\n",
        "resp_abc def",
        "resp_abc?x=1",
        "../resp_abc",
        "resp_abc%2F",
    ],
)
def test_get_response_refuses_a_malformed_id_without_any_http(
    mocked: responses.RequestsMock, make_client: MakeClient, bad_id: str
) -> None:
    with pytest.raises(Mka1InvalidRequestError) as caught:
        make_client().get_response(USER, bad_id)

    assert caught.value.transient is False
    assert len(mocked.calls) == 0


@pytest.mark.parametrize("good_id", ["resp_abc123", "resp-ABC9", "resp_0"])
def test_get_response_accepts_well_formed_ids(
    mocked: responses.RequestsMock, make_client: MakeClient, good_id: str
) -> None:
    mocked.add("GET", f"{API}/responses/{good_id}", json=RESPONSE)

    make_client().get_response(USER, good_id)

    assert mocked.calls[0].request.path_url == f"/api/v1/llm/responses/{good_id}"


def test_path_segments_are_url_quoted(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    mocked.add("GET", ANY_URL, json={})

    client = make_client()
    client.get_conversation_item(USER, "conv/1?x=2", "item#3 4")
    client.list_conversation_items(USER, "conv/../admin")

    assert mocked.calls[0].request.path_url == (
        "/api/v1/llm/conversations/conv%2F1%3Fx%3D2/items/item%233%204"
    )
    assert mocked.calls[1].request.path_url == (
        "/api/v1/llm/conversations/conv%2F..%2Fadmin/items?order=asc"
    )


@pytest.mark.parametrize(
    ("conversation_id", "item_id"),
    [
        ("", "msg_1"),
        ("conv_1", ""),
        ("..", "msg_1"),
        ("conv_1", ".."),
        (".", "msg_1"),
        ("conv_1", "."),
    ],
)
def test_an_empty_or_dot_segment_is_refused_without_any_http(
    mocked: responses.RequestsMock, make_client: MakeClient, conversation_id: str, item_id: str
) -> None:
    # ".." would be resolved by requests and reach a different endpoint as this end user.
    with pytest.raises(Mka1InvalidRequestError):
        make_client().get_conversation_item(USER, conversation_id, item_id)

    assert len(mocked.calls) == 0


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
