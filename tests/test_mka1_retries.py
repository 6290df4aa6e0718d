"""When the MKA1 client tries again: only what is transient and safe to repeat, waiting
as Retry-After or the jittered back-off says, up to max_retries.

HTTP is faked with `responses`; every client gets a recording `sleep`, so no test waits.
"""

import email.utils
import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import requests
import responses

from multichannel.mka1 import (
    Mka1AuthError,
    Mka1Client,
    Mka1ConnectionError,
    Mka1Error,
    Mka1InvalidRequestError,
    Mka1NotFoundError,
    Mka1RateLimitError,
    Mka1ServerError,
    Mka1TimeoutError,
)
from tests.support.mka1 import (
    API,
    KEY,
    MODEL,
    RESPONSE,
    USER,
    MakeClient,
    create_response,
    lost,
    mka1_error,
    refused,
    unresolved,
)

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

    monkeypatch.setattr("multichannel.http.random.uniform", uniform)
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
