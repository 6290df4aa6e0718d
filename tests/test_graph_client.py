"""The Graph API seam: request shape, error classification, retries, message splitting."""

import json

import pytest
import requests
import responses

from whatsapp.graph import GraphClient, GraphError, split_message

URL = "https://graph.test/v25.0/123456/messages"
TOKEN = "test-graph-token-not-real"


@pytest.fixture
def graph() -> tuple[GraphClient, list[float]]:
    slept: list[float] = []
    client = GraphClient(
        token=TOKEN,
        base_url="https://graph.test",
        version="v25.0",
        phone_number_id="123456",
        max_retries=2,
        sleep=slept.append,
    )
    return client, slept


def ok(wamid: str = "wamid.OK") -> dict:
    return {"messaging_product": "whatsapp", "messages": [{"id": wamid}]}


@responses.activate
def test_send_text_posts_the_cloud_api_shape(graph) -> None:
    client, _ = graph
    responses.post(URL, json=ok("wamid.1"))
    assert client.send_text(text="hello", to="15551234567") == "wamid.1"
    request = responses.calls[0].request
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request.body or b"") == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "15551234567",
        "type": "text",
        "text": {"preview_url": False, "body": "hello"},
    }


@responses.activate
def test_a_user_without_phone_number_is_addressed_by_business_scoped_id(graph) -> None:
    client, _ = graph
    responses.post(URL, json=ok())
    client.send_text(text="hi", recipient="US.13491208655302741918")
    body = json.loads(responses.calls[0].request.body or b"")
    assert body["recipient"] == "US.13491208655302741918"
    assert "to" not in body


@responses.activate
def test_mark_read_posts_the_read_status(graph) -> None:
    client, _ = graph
    responses.post(URL, json={"success": True})
    client.mark_read("wamid.IN")
    assert json.loads(responses.calls[0].request.body or b"") == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.IN",
    }


@responses.activate
def test_a_5xx_is_retried_then_succeeds(graph) -> None:
    client, slept = graph
    responses.post(URL, status=500, json={"error": {"message": "boom", "code": 1}})
    responses.post(URL, json=ok("wamid.2"))
    assert client.send_text(text="x", to="1") == "wamid.2"
    assert len(responses.calls) == 2
    assert len(slept) == 1


@responses.activate
def test_5xx_retries_stop_after_max_retries(graph) -> None:
    client, _ = graph
    responses.post(URL, status=503, json={"error": {"message": "down"}})
    with pytest.raises(GraphError) as caught:
        client.send_text(text="x", to="1")
    assert caught.value.transient
    assert len(responses.calls) == 3


@pytest.mark.parametrize("code", [130429, 131056])
@responses.activate
def test_rate_limits_are_transient_but_left_to_the_caller(graph, code: int) -> None:
    client, _ = graph
    responses.post(URL, status=400, json={"error": {"message": "slow down", "code": code}})
    with pytest.raises(GraphError) as caught:
        client.send_text(text="x", to="1")
    assert (caught.value.transient, caught.value.code) == (True, code)
    assert len(responses.calls) == 1


@pytest.mark.parametrize("code", [131047, 131026, 100, 190])
@responses.activate
def test_permanent_errors_are_not_retried(graph, code: int) -> None:
    client, _ = graph
    responses.post(URL, status=400, json={"error": {"message": "no", "code": code}})
    with pytest.raises(GraphError) as caught:
        client.send_text(text="x", to="1")
    assert not caught.value.transient
    assert caught.value.code == code
    assert len(responses.calls) == 1


@responses.activate
def test_a_send_that_timed_out_is_not_repeated_inline(graph) -> None:
    client, _ = graph
    responses.post(URL, body=requests.ReadTimeout("slow"))
    with pytest.raises(GraphError) as caught:
        client.send_text(text="x", to="1")
    assert caught.value.transient
    assert len(responses.calls) == 1


@responses.activate
def test_a_connect_timeout_is_retried(graph) -> None:
    client, _ = graph
    responses.post(URL, body=requests.ConnectTimeout("no route"))
    responses.post(URL, json=ok("wamid.3"))
    assert client.send_text(text="x", to="1") == "wamid.3"


@responses.activate
def test_the_token_never_appears_in_errors(graph) -> None:
    client, _ = graph
    responses.post(URL, status=400, json={"error": {"message": f"bad token {TOKEN}", "code": 190}})
    with pytest.raises(GraphError) as caught:
        client.send_text(text="x", to="1")
    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(client)


def test_text_longer_than_the_limit_is_refused_before_sending(graph) -> None:
    client, _ = graph
    with pytest.raises(ValueError, match="4096"):
        client.send_text(text="x" * 4097, to="1")


def test_short_text_is_one_part() -> None:
    assert split_message("  hello  ") == ["hello"]
    assert split_message("") == []


def test_split_prefers_paragraphs_then_sentences_then_words() -> None:
    paragraphs = "a" * 3000 + "\n\n" + "b" * 3000
    assert split_message(paragraphs) == ["a" * 3000, "b" * 3000]
    sentences = ("Short sentence here. " * 300).strip()
    parts = split_message(sentences)
    assert all(len(p) <= 4096 and p.endswith(".") for p in parts)
    assert " ".join(parts) == sentences
    words = ("word " * 2000).strip()
    assert all(not p.startswith(" ") and len(p) <= 4096 for p in split_message(words))
    assert " ".join(split_message(words)) == words


def test_a_single_overlong_word_is_cut_at_the_limit() -> None:
    parts = split_message("x" * 10_000)
    assert [len(p) for p in parts] == [4096, 4096, 1808]


# --- media, typing, quotes, templates ---------------------------------------------------

MEDIA_URL = "https://graph.test/v25.0/media-1"
DOWNLOAD = "https://lookaside.test/whatsapp_business/attachments/?mid=1&hash=x"


@responses.activate
def test_media_info_asks_for_the_media_id_with_the_token(graph) -> None:
    client, _ = graph
    info = {"url": DOWNLOAD, "mime_type": "audio/ogg", "sha256": "ab", "file_size": 3, "id": "m"}
    responses.get(MEDIA_URL, json=info)
    assert client.media_info("media-1") == info
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


@responses.activate
def test_a_download_sends_the_token_and_returns_the_bytes(graph) -> None:
    client, _ = graph
    responses.get(DOWNLOAD, body=b"OggS-voice", content_type="audio/ogg")
    assert client.media_download(DOWNLOAD, max_bytes=100) == b"OggS-voice"
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


@responses.activate
def test_a_download_over_the_limit_is_refused_without_reading_it_all(graph) -> None:
    from whatsapp.graph import MediaTooLargeError

    client, _ = graph
    responses.get(DOWNLOAD, body=b"x" * 1000)
    with pytest.raises(MediaTooLargeError):
        client.media_download(DOWNLOAD, max_bytes=100)


@responses.activate
@pytest.mark.parametrize("status", [401, 404, 410, 500])
def test_an_expired_or_failing_download_is_transient(graph, status: int) -> None:
    client, _ = graph
    responses.get(DOWNLOAD, status=status)
    with pytest.raises(GraphError) as caught:
        client.media_download(DOWNLOAD, max_bytes=100)
    assert caught.value.transient  # the next attempt asks for a fresh URL


@responses.activate
def test_typing_marks_read_and_shows_the_indicator_once(graph) -> None:
    client, slept = graph
    responses.post(URL, status=500)
    with pytest.raises(GraphError):
        client.typing("wamid.IN")
    assert len(responses.calls) == 1  # cosmetic: no retries
    assert json.loads(responses.calls[0].request.body or b"") == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.IN",
        "typing_indicator": {"type": "text"},
    }
    assert slept == []


@responses.activate
def test_a_reply_can_quote_the_message_it_answers(graph) -> None:
    client, _ = graph
    responses.post(URL, json=ok())
    client.send_text(text="answer", to="15551234567", reply_to="wamid.Q")
    assert json.loads(responses.calls[0].request.body or b"")["context"] == {
        "message_id": "wamid.Q"
    }


@responses.activate
def test_a_template_is_sent_by_name_and_language(graph) -> None:
    client, _ = graph
    responses.post(URL, json=ok("wamid.T"))
    assert client.send_template(name="reengage", language="en_US", to="155") == "wamid.T"
    body = json.loads(responses.calls[0].request.body or b"")
    assert body["type"] == "template"
    assert body["template"] == {"name": "reengage", "language": {"code": "en_US"}}
