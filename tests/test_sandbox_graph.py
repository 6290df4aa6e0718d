"""The Graph API stand-in holds media as Meta does: uploaded by id, described by the
media endpoint, downloaded from a signed URL that expires, both behind the bearer
token; it can cut a download short; and its messages endpoint takes typing indicators,
quoted replies and templates besides texts and read marks."""

import hashlib
import json
import time
from io import StringIO
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.core.management import CommandError, call_command
from django.test import Client
from pytest_django import Settings

from multichannel.sandbox.faults import fault_inject
from multichannel.sandbox.models import SandboxFault, SandboxGraphMessage, SandboxMedia
from multichannel.sandbox.transport import InProcessAdapter
from tests.support.media import PDF, PNG, media_upload

pytestmark = pytest.mark.django_db

GRAPH = "/sandbox/graph/v25.0"
PHONE_ID = "100000000000001"
TOKEN = "test-graph-token-not-real"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
MEDIA_INFO_KEYS = ["messaging_product", "url", "mime_type", "sha256", "file_size", "id"]


def in_process() -> requests.Session:
    """What the product's Graph client does with `sandbox://graph` URLs."""
    session = requests.Session()
    session.mount("sandbox://", InProcessAdapter())
    return session


def info(media_id: str, session: requests.Session | None = None) -> requests.Response:
    return (session or in_process()).get(
        f"sandbox://graph/v25.0/{media_id}", headers=BEARER, timeout=5
    )


def graph_error(answer: Any) -> dict[str, Any]:
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) == {"message", "type", "code", "fbtrace_id"}
    return error


def upload(client: Client, data: Any, **headers: str) -> Any:
    return client.post(f"{GRAPH}/{PHONE_ID}/media", data, headers=headers or BEARER)


@pytest.fixture
def png() -> str:
    """The id of a PNG the user sent."""
    return media_upload(PNG, mime_type="image/png", filename="pixel.png").id


# --- upload --------------------------------------------------------------------------


def test_an_upload_is_held_by_id_with_its_digest(client: Client) -> None:
    answer = upload(
        client,
        {"messaging_product": "whatsapp", "type": "application/pdf", "file": _file(PDF, "a.pdf")},
    )
    assert answer.status_code == 200
    assert list(answer.json()) == ["id"]
    media = SandboxMedia.objects.get(pk=answer.json()["id"])
    assert media.id.isdigit()
    assert (media.mime_type, media.filename, media.file_size) == (
        "application/pdf",
        "a.pdf",
        len(PDF),
    )
    assert media.sha256 == hashlib.sha256(PDF).hexdigest()
    assert bytes(media.data) == PDF


def test_the_upload_helper_reports_what_the_webhook_carries() -> None:
    uploaded = media_upload(PNG, mime_type="image/png", filename="pixel.png")
    assert uploaded.sha256 == hashlib.sha256(PNG).hexdigest()
    assert uploaded.file_size == len(PNG)
    assert SandboxMedia.objects.get(pk=uploaded.id).sha256 == uploaded.sha256


def _file(data: bytes, name: str) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "image/png"}, "messaging_product must be whatsapp"),
        ({"messaging_product": "whatsapp"}, "type (the file's MIME type) is required"),
        ({"messaging_product": "whatsapp", "type": "png"}, "type (the file's MIME type)"),
    ],
    ids=["no-messaging-product", "no-type", "type-not-a-mime-type"],
)
def test_a_bad_upload_is_refused_and_holds_nothing(
    client: Client, fields: dict[str, str], message: str
) -> None:
    answer = upload(client, {**fields, "file": _file(PNG, "p.png")})
    assert answer.status_code == 400
    error = graph_error(answer)
    assert error["code"] == 100
    assert error["message"].startswith(message)
    assert SandboxMedia.objects.count() == 0


def test_an_upload_without_a_file_is_refused(client: Client) -> None:
    answer = upload(client, {"messaging_product": "whatsapp", "type": "image/png"})
    assert (answer.status_code, graph_error(answer)["message"]) == (400, "file is required")


def test_an_upload_that_is_not_multipart_is_refused(client: Client) -> None:
    answer = client.post(
        f"{GRAPH}/{PHONE_ID}/media", "{}", content_type="application/json", headers=BEARER
    )
    assert answer.status_code == 400
    assert SandboxMedia.objects.count() == 0


@pytest.mark.parametrize("authorization", [None, "", "Bearer ", "Basic dXNlcjpwYXNz"])
def test_an_upload_without_a_bearer_token_is_unauthorized(
    client: Client, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    fields = {"messaging_product": "whatsapp", "type": "image/png", "file": _file(PNG, "p.png")}
    answer = client.post(f"{GRAPH}/{PHONE_ID}/media", fields, headers=headers)
    assert answer.status_code == 401
    assert graph_error(answer)["code"] == 190
    assert SandboxMedia.objects.count() == 0


# --- media info ----------------------------------------------------------------------


def test_media_info_has_meta_shape_and_an_in_process_url(png: str) -> None:
    answer = info(png)
    assert answer.status_code == 200
    body = answer.json()
    assert list(body) == MEDIA_INFO_KEYS
    assert body["messaging_product"] == "whatsapp"
    assert body["id"] == png
    assert body["mime_type"] == "image/png"
    assert body["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert body["file_size"] == len(PNG)
    url = urlsplit(body["url"])
    # Followable the way the info was asked for: in process, without a port.
    assert (url.scheme, url.netloc, url.path) == (
        "sandbox",
        "graph",
        "/whatsapp_business/attachments/",
    )
    assert set(parse_qs(url.query)) == {"mid", "ext", "hash"}


def test_media_info_over_http_gives_an_absolute_http_url(client: Client, png: str) -> None:
    answer = client.get(f"{GRAPH}/{png}", headers=BEARER)
    assert answer.status_code == 200
    assert answer.json()["url"].startswith(
        "http://testserver/sandbox/graph/whatsapp_business/attachments/?mid="
    )


def test_media_info_url_expires_after_the_configured_lifetime(png: str, settings: Settings) -> None:
    settings.SANDBOX_MEDIA_URL_SECONDS = 120
    before = int(time.time())
    url = info(png).json()["url"]
    expires = int(parse_qs(urlsplit(url).query)["ext"][0])
    assert before + 120 <= expires <= int(time.time()) + 120


def test_media_info_for_an_unknown_id_is_not_found() -> None:
    answer = info("1234567890123456")
    assert answer.status_code == 404
    assert graph_error(answer)["code"] == 100


@pytest.mark.parametrize("authorization", [None, "Bearer ", "Basic dXNlcjpwYXNz"])
def test_media_info_without_a_bearer_token_is_unauthorized(
    client: Client, png: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = client.get(f"{GRAPH}/{png}", headers=headers)
    assert answer.status_code == 401
    assert graph_error(answer)["code"] == 190


def test_a_media_info_fault_answers_its_status_then_stops(png: str) -> None:
    fault_inject("graph.media", status=500)
    assert [info(png).status_code for _ in range(2)] == [500, 200]


def test_a_planned_media_info_body_replaces_the_answer(png: str) -> None:
    # How a test serves a digest the bytes will not match.
    planned = {**info(png).json(), "sha256": "0" * 64}
    fault_inject("graph.media", status=200, body=planned)
    assert info(png).json() == planned


# --- download ------------------------------------------------------------------------


def test_the_download_url_serves_the_bytes_with_their_type_and_length(png: str) -> None:
    session = in_process()
    answer = session.get(info(png, session).json()["url"], headers=BEARER, timeout=5)
    assert answer.status_code == 200
    assert answer.content == PNG
    assert answer.headers["Content-Type"] == "image/png"
    assert answer.headers["Content-Length"] == str(len(PNG))


def test_the_download_url_works_over_http_too(client: Client, png: str) -> None:
    url = client.get(f"{GRAPH}/{png}", headers=BEARER).json()["url"]
    answer = client.get(url.removeprefix("http://testserver"), headers=BEARER)
    assert answer.status_code == 200
    assert answer.content == PNG


def test_the_download_needs_the_bearer_token(png: str) -> None:
    url = info(png).json()["url"]
    answer = in_process().get(url, timeout=5)
    assert answer.status_code == 401
    assert graph_error(answer)["code"] == 190


def _with(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    query.update(changes)
    return parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())).geturl()


@pytest.mark.parametrize("change", ["hash", "mid", "ext"])
def test_a_tampered_download_url_is_not_found(png: str, change: str) -> None:
    other = media_upload(PDF, mime_type="application/pdf", filename="a.pdf").id
    url = info(png).json()["url"]
    query = parse_qs(urlsplit(url).query)
    tampered = {
        "hash": {"hash": "0" * 64},
        "mid": {"mid": other},  # a signature is good for one media id only
        "ext": {"ext": str(int(query["ext"][0]) + 3600)},  # nor can its life be extended
    }[change]
    answer = in_process().get(_with(url, **tampered), headers=BEARER, timeout=5)
    assert answer.status_code == 404
    assert graph_error(answer)["code"] == 100


def test_an_expired_download_url_is_not_found_and_a_fresh_one_works(
    png: str, settings: Settings
) -> None:
    settings.SANDBOX_MEDIA_URL_SECONDS = 0
    expired = info(png).json()["url"]
    settings.SANDBOX_MEDIA_URL_SECONDS = 300
    fresh = info(png).json()["url"]
    session = in_process()
    assert session.get(expired, headers=BEARER, timeout=5).status_code == 404
    assert session.get(fresh, headers=BEARER, timeout=5).content == PNG


def test_a_download_fault_answers_its_status(png: str) -> None:
    url = info(png).json()["url"]
    fault_inject("graph.media.download", status=503)
    session = in_process()
    assert session.get(url, headers=BEARER, timeout=5).status_code == 503
    assert session.get(url, headers=BEARER, timeout=5).content == PNG


def test_a_truncated_download_breaks_off_mid_body_in_process(png: str) -> None:
    url = info(png).json()["url"]
    fault_inject("graph.media.download", truncate=True)
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        in_process().get(url, headers=BEARER, timeout=5)
    # The next download is whole again.
    assert in_process().get(url, headers=BEARER, timeout=5).content == PNG


def test_a_truncated_download_announces_the_full_length_then_breaks_when_streamed(
    png: str,
) -> None:
    url = info(png).json()["url"]
    fault_inject("graph.media.download", truncate=True)
    answer = in_process().get(url, headers=BEARER, timeout=5, stream=True)
    assert answer.status_code == 200
    assert answer.headers["Content-Length"] == str(len(PNG))
    chunks = answer.iter_content(len(PNG) // 2)
    assert next(chunks) == PNG[: len(PNG) // 2]
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        next(chunks)


@pytest.mark.django_db(transaction=True)
def test_a_truncated_download_over_real_http_is_a_broken_read(live_server: Any) -> None:
    base = f"{live_server.url}/sandbox/graph"
    media = media_upload(PDF, mime_type="application/pdf", filename="a.pdf", graph_url=base)
    session = requests.Session()
    url = session.get(f"{base}/v25.0/{media.id}", headers=BEARER, timeout=5).json()["url"]
    assert url.startswith(f"{live_server.url}/sandbox/graph/whatsapp_business/attachments/")
    fault_inject("graph.media.download", truncate=True)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        session.get(url, headers=BEARER, timeout=10)
    # The server dropped the connection: no waiting out the client's read timeout.
    assert time.monotonic() - started < 5
    assert session.get(url, headers=BEARER, timeout=5).content == PDF


def test_only_a_download_can_be_truncated() -> None:
    with pytest.raises(ValueError, match=r"only graph\.media\.download can be truncated"):
        fault_inject("graph.media", truncate=True)
    with pytest.raises(ValueError, match="takes no status"):
        fault_inject("graph.media.download", truncate=True, status=500)
    assert SandboxFault.objects.count() == 0


def run_sandbox_fault(*args: str) -> str:
    out = StringIO()
    call_command("sandbox_fault", *args, stdout=out)
    return out.getvalue()


def test_sandbox_fault_plans_truncated_downloads(png: str) -> None:
    output = run_sandbox_fault("graph.media.download", "--truncate", "--times", "2")
    assert output == (
        "Planned: the next 2 calls to graph.media.download will send only part of the "
        "body, then drop the connection.\n"
    )
    fault = SandboxFault.objects.get()
    assert (fault.truncate, fault.status, fault.remaining) == (True, None, 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("graph.media", "--truncate"), "--truncate is for graph.media.download only"),
        (("*", "--truncate"), "--truncate is for graph.media.download only"),
        (("graph.media.download", "--truncate", "--status", "500"), "takes no --status"),
        (("--clear", "--truncate"), "--clear takes no endpoint"),
    ],
)
def test_sandbox_fault_refuses_a_truncation_that_means_nothing(
    args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        run_sandbox_fault(*args)
    assert SandboxFault.objects.count() == 0


# --- messages: typing, quoted replies, templates -------------------------------------


def send(client: Client, body: Any) -> Any:
    return client.post(
        f"{GRAPH}/{PHONE_ID}/messages",
        json.dumps(body),
        content_type="application/json",
        headers=BEARER,
    )


def test_a_typing_indicator_is_recorded_apart_from_a_read_mark(client: Client) -> None:
    read = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.A"}
    typing = {**read, "typing_indicator": {"type": "text"}}
    assert send(client, typing).json() == {"success": True}
    assert send(client, read).json() == {"success": True}
    recorded = [(m.kind, m.body) for m in SandboxGraphMessage.objects.all()]
    assert recorded == [("typing", typing), ("read", read)]


@pytest.mark.parametrize("indicator", [{"type": "audio"}, "text", {}])
def test_a_malformed_typing_indicator_is_refused(client: Client, indicator: Any) -> None:
    body = {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.A",
        "typing_indicator": indicator,
    }
    answer = send(client, body)
    assert answer.status_code == 400
    assert graph_error(answer)["code"] == 100
    assert SandboxGraphMessage.objects.count() == 0


def test_a_quoted_reply_is_sent_and_recorded_with_its_context(client: Client) -> None:
    body = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "15551234567",
        "context": {"message_id": "wamid.QUOTED"},
        "type": "text",
        "text": {"body": "*Paris*"},
    }
    answer = send(client, body)
    assert answer.status_code == 200
    sent = SandboxGraphMessage.objects.get()
    assert (sent.kind, sent.wamid, sent.body) == ("text", answer.json()["messages"][0]["id"], body)


@pytest.mark.parametrize("context", [{"message_id": 5}, {}, "wamid.QUOTED"])
def test_a_malformed_context_is_refused(client: Client, context: Any) -> None:
    body = {
        "messaging_product": "whatsapp",
        "to": "15551234567",
        "context": context,
        "type": "text",
        "text": {"body": "hi"},
    }
    assert send(client, body).status_code == 400
    assert SandboxGraphMessage.objects.count() == 0


TEMPLATE = {"name": "reengage", "language": {"code": "en_US"}}


@pytest.mark.parametrize("address", ["to", "recipient"])
def test_a_template_is_answered_like_a_text_and_recorded(client: Client, address: str) -> None:
    body = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        address: "15551234567",
        "type": "template",
        "template": TEMPLATE,
    }
    answer = send(client, body)
    assert answer.status_code == 200
    sent = SandboxGraphMessage.objects.get()
    contact = {"input": "15551234567", **({"wa_id": "15551234567"} if address == "to" else {})}
    assert answer.json() == {
        "messaging_product": "whatsapp",
        "contacts": [contact],
        "messages": [{"id": sent.wamid}],
    }
    assert (sent.kind, sent.recipient, sent.body) == ("template", "15551234567", body)


@pytest.mark.parametrize(
    "template",
    [
        None,
        {"language": {"code": "en_US"}},
        {"name": "", "language": {"code": "en_US"}},
        {"name": "reengage"},
        {"name": "reengage", "language": {"code": ""}},
        {"name": "reengage", "language": "en_US"},
        {**TEMPLATE, "components": "none"},
    ],
)
def test_a_malformed_template_is_refused(client: Client, template: Any) -> None:
    body = {"messaging_product": "whatsapp", "to": "15551234567", "type": "template"}
    if template is not None:
        body["template"] = template
    answer = send(client, body)
    assert answer.status_code == 400
    assert graph_error(answer)["code"] == 100
    assert SandboxGraphMessage.objects.count() == 0


def test_other_message_types_are_still_refused(client: Client) -> None:
    body = {"messaging_product": "whatsapp", "to": "1555", "type": "image", "image": {"id": "1"}}
    assert send(client, body).status_code == 400


def test_a_messages_fault_with_a_delay_waits_then_fails(client: Client) -> None:
    fault_inject("graph.messages", status=503, delay_ms=5)
    started = time.perf_counter()
    answer = send(client, {"messaging_product": "whatsapp", "status": "read", "message_id": "w"})
    assert time.perf_counter() - started >= 0.005
    assert answer.status_code == 503
