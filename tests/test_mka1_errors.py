"""MKA1 errors: each class says whether it is transient, carries the status and body,
and never holds the API key, whatever the server echoes back.

HTTP is faked with `responses`; every client gets a recording `sleep`, so no test waits.
"""

import json
import logging
from typing import Any

import pytest
import requests
import responses

from multichannel.mka1 import (
    Mka1AuthError,
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
)
from tests.support.mka1 import (
    API,
    KEY,
    USER,
    MakeClient,
    create_response,
    mka1_error,
)

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
    assert "[redacted]" in json.dumps(caught.value.body)


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
