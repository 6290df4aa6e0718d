"""What the MKA1 client puts on the wire: headers, exact paths and queries, bodies the
official SDK accepts, the chain mode, timeouts, and ids refused before any HTTP.

HTTP is faked with `responses`; every client gets a recording `sleep`, so no test waits.
"""

from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses
from meetkai_mka1.models.createconversationrequest import CreateConversationRequest
from meetkai_mka1.models.responsescreaterequest import ResponsesCreateRequest

from multichannel.mka1 import (
    Mka1Client,
    Mka1InvalidRequestError,
)
from tests.support.mka1 import (
    ANY_URL,
    API,
    BASE,
    CALLS,
    KEY,
    MODEL,
    MULTIPART_CALLS,
    RESPONSE,
    USER,
    MakeClient,
    assert_sdk_request,
    create_response,
    sent_json,
    sent_timeout,
)

# --- headers and paths -------------------------------------------------------------


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
    if name in MULTIPART_CALLS:
        assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    elif method == "POST":
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
