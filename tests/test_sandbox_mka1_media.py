"""The MKA1 stand-in hears, reads and sees deterministically, in the SDK's shapes: speech
to text (with the history MKA1 keeps), uploaded files, feedback on stored responses, and
responses whose input carries images and documents. Each caller's objects stay theirs."""

import base64
import hashlib
import io
import json
import re
import wave
from typing import TYPE_CHECKING, Any

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from meetkai_mka1.models import (
    CreateFeedbackRequest,
    CreateFeedbackResponse,
    File,
    FileDeletionStatus,
    InputFile,
    InputImage,
    ResponseObject,
    SpeechHistoryDeletionStatus,
    SpeechToTextHistoryList,
    TranscriptionResponse,
)
from meetkai_mka1.models.conversations_items_listop import ConversationsItemsListResponse

from multichannel.sandbox import mka1_media_views
from multichannel.sandbox.audio import spoken_wav, transcript_of, wav_comment_and_seconds
from multichannel.sandbox.faults import fault_inject
from multichannel.sandbox.models import (
    SandboxFeedback,
    SandboxFile,
    SandboxItem,
    SandboxResponse,
    SandboxTranscription,
)
from multichannel.sandbox.transport import InProcessAdapter
from tests.support.media import PDF, PNG
from tests.support.mka1 import assert_sdk_request

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Answer

pytestmark = pytest.mark.django_db

API = "/sandbox/mka1/api/v1/llm"
ALICE = "user_alice"
BOB = "user_bob"
KEY = "test-key-alice-not-real"
OTHER_KEY = "test-key-other-not-real"
MODEL = "meetkai:functionary-pt"
OTHER_OWNERS = pytest.mark.parametrize(
    ("user", "key"), [(BOB, KEY), (ALICE, OTHER_KEY)], ids=["other-user", "other-api-key"]
)


def auth(user: str = ALICE, key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "X-On-Behalf-Of": user}


def error_of(answer: "Answer") -> dict[str, Any]:
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def transcribe(
    client: Client,
    data: bytes,
    name: str = "voice.wav",
    content_type: str = "audio/wav",
    *,
    user: str = ALICE,
    key: str = KEY,
    query: str = "",
) -> "Answer":
    upload = SimpleUploadedFile(name, data, content_type=content_type)
    return client.post(
        f"{API}/speech/transcriptions{query}", {"file": upload}, headers=auth(user, key)
    )


def upload_file(
    client: Client,
    data: bytes = PDF,
    name: str = "report.pdf",
    purpose: str = "user_data",
    *,
    user: str = ALICE,
    key: str = KEY,
) -> "Answer":
    upload = SimpleUploadedFile(name, data, content_type="application/pdf")
    return client.post(
        f"{API}/files", {"file": upload, "purpose": purpose}, headers=auth(user, key)
    )


def post_json(client: Client, path: str, body: Any, *, user: str = ALICE, key: str = KEY) -> Any:
    return client.post(
        f"{API}{path}", json.dumps(body), content_type="application/json", headers=auth(user, key)
    )


# --- speech to text ------------------------------------------------------------------


def test_a_spoken_wav_is_transcribed_word_for_word(client: Client) -> None:
    answer = transcribe(client, spoken_wav("What is the capital of France?"))
    assert answer.status_code == 200
    parsed = TranscriptionResponse.model_validate(answer.json())
    assert (parsed.text, parsed.language) == ("What is the capital of France?", "en")
    assert set(answer.json()) == {"text", "language"}


def test_transcription_goes_through_the_in_process_transport_as_multipart() -> None:
    session = requests.Session()
    session.mount("sandbox://", InProcessAdapter())
    answer = session.post(
        "sandbox://mka1/api/v1/llm/speech/transcriptions",
        files={"file": ("voice.ogg", spoken_wav("¿Qué tal? ✓"), "audio/ogg; codecs=opus")},
        headers=auth(),
        timeout=5,
    )
    assert answer.status_code == 200
    assert TranscriptionResponse.model_validate(answer.json()).text == "¿Qué tal? ✓"


def test_a_wav_without_words_is_described_by_its_duration(client: Client) -> None:
    silent = io.BytesIO()
    with wave.open(silent, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\0\0" * (16000 * 3 // 2))
    answer = transcribe(client, silent.getvalue())
    assert answer.json()["text"] == "(a voice note of 1.5 seconds)"


def test_other_audio_is_described_by_its_size_and_digest(client: Client) -> None:
    ogg = b"OggS\0\x02" + bytes(range(200))
    digest = hashlib.sha256(ogg).hexdigest()[:8]
    first = transcribe(client, ogg, "voice.ogg", "audio/ogg; codecs=opus").json()["text"]
    again = transcribe(client, ogg, "voice.ogg", "audio/ogg; codecs=opus").json()["text"]
    assert first == again == f"(a voice note of {len(ogg)} bytes, sha256 {digest})"


def test_the_language_asked_for_is_the_language_answered(client: Client) -> None:
    answer = transcribe(client, spoken_wav("Bonjour"), query="?language=fr")
    assert answer.json() == {"text": "Bonjour", "language": "fr"}


def test_spoken_wav_is_a_valid_wav_of_the_asked_length() -> None:
    data = spoken_wav("hello", seconds=2.0)
    with wave.open(io.BytesIO(data)) as wav:
        assert wav.getnframes() / wav.getframerate() == 2.0
    assert wav_comment_and_seconds(data) == ("hello", 2.0)
    assert transcript_of(data) == "hello"


def test_audio_over_25_mb_is_refused_with_413(client: Client) -> None:
    limit = 25 * 1024 * 1024
    assert limit == mka1_media_views.TRANSCRIPTION_LIMIT
    answer = transcribe(client, b"\0" * (limit + 1), "big.ogg", "audio/ogg")
    assert answer.status_code == 413
    error = error_of(answer)
    assert (error["type"], error["code"]) == ("invalid_request_error", "file_too_large")
    assert SandboxTranscription.objects.count() == 0


def test_audio_of_exactly_25_mb_is_transcribed(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The limit is inclusive (a smaller one keeps this test quick).
    monkeypatch.setattr(mka1_media_views, "TRANSCRIPTION_LIMIT", 1000)
    assert transcribe(client, b"\1" * 1000, "a.ogg", "audio/ogg").status_code == 200
    assert transcribe(client, b"\1" * 1001, "a.ogg", "audio/ogg").status_code == 413


@pytest.mark.parametrize(
    ("name", "content_type", "data"),
    [
        ("notes.txt", "text/plain", b"not audio"),
        ("voice.ogg", "audio/ogg", b""),
    ],
    ids=["not-audio", "empty"],
)
def test_what_is_not_audio_is_refused(
    client: Client, name: str, content_type: str, data: bytes
) -> None:
    answer = transcribe(client, data, name, content_type)
    assert answer.status_code == 400
    assert error_of(answer)["code"] == "file"
    assert SandboxTranscription.objects.count() == 0


def test_a_transcription_without_a_file_is_refused(client: Client) -> None:
    answer = client.post(f"{API}/speech/transcriptions", {"purpose": "x"}, headers=auth())
    assert (answer.status_code, error_of(answer)["code"]) == (400, "file")


def test_a_transcription_that_is_not_multipart_is_unsupported(client: Client) -> None:
    assert post_json(client, "/speech/transcriptions", {"file": "x"}).status_code == 415


def test_a_transcription_without_a_bearer_token_is_unauthorized(client: Client) -> None:
    upload = SimpleUploadedFile("v.wav", spoken_wav("hi"), content_type="audio/wav")
    answer = client.post(f"{API}/speech/transcriptions", {"file": upload})
    assert answer.status_code == 401
    assert SandboxTranscription.objects.count() == 0


def test_a_transcription_fault_answers_its_status(client: Client) -> None:
    fault_inject("speech.transcriptions", status=503)
    assert transcribe(client, spoken_wav("hi")).status_code == 503
    assert SandboxTranscription.objects.count() == 0
    assert transcribe(client, spoken_wav("hi")).status_code == 200


# --- transcription history -----------------------------------------------------------


def history(client: Client, *, user: str = ALICE, key: str = KEY, **params: str) -> "Answer":
    return client.get(f"{API}/speech/transcriptions/history", params, headers=auth(user, key))


@pytest.fixture
def three_heard(client: Client) -> list[str]:
    """Three transcriptions of Alice's, oldest first; their texts."""
    texts = ["one", "two", "three"]
    for text in texts:
        assert transcribe(client, spoken_wav(text)).status_code == 200
    return texts


def test_every_transcription_is_kept_as_history_newest_first(
    client: Client, three_heard: list[str]
) -> None:
    answer = history(client)
    assert answer.status_code == 200
    parsed = SpeechToTextHistoryList.model_validate(answer.json())
    assert [item.text for item in parsed.data] == list(reversed(three_heard))
    assert parsed.has_more is False
    first = parsed.data[0]
    assert first.object == "speech.transcription"
    assert (first.filename, first.audio_mime_type) == ("voice.wav", "audio/wav")
    assert first.audio_bytes == len(spoken_wav("three"))
    assert (parsed.first_id, parsed.last_id) == (parsed.data[0].id, parsed.data[-1].id)


def test_history_pages_with_order_limit_and_after(client: Client, three_heard: list[str]) -> None:
    first = history(client, order="asc", limit="2").json()
    assert [item["text"] for item in first["data"]] == ["one", "two"]
    assert first["has_more"] is True
    rest = history(client, order="asc", limit="2", after=first["last_id"]).json()
    assert [item["text"] for item in rest["data"]] == ["three"]
    assert rest["has_more"] is False
    SpeechToTextHistoryList.model_validate(rest)


def test_an_empty_history_is_still_an_sdk_list(client: Client) -> None:
    parsed = SpeechToTextHistoryList.model_validate(history(client).json())
    assert (parsed.data, parsed.has_more) == ([], False)


@OTHER_OWNERS
def test_history_is_the_callers_own(
    client: Client, three_heard: list[str], user: str, key: str
) -> None:
    assert history(client, user=user, key=key).json()["data"] == []


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"order": "newest"}]
)
def test_bad_history_paging_is_a_bad_request(client: Client, params: dict[str, str]) -> None:
    assert history(client, **params).status_code == 400


def test_history_after_an_unknown_id_is_not_found(client: Client, three_heard: list[str]) -> None:
    assert history(client, after="stt_nope").status_code == 404


def test_deleting_a_transcription_removes_it_from_history(
    client: Client, three_heard: list[str]
) -> None:
    stt_id = history(client).json()["data"][0]["id"]
    answer = client.delete(f"{API}/speech/transcriptions/history/{stt_id}", headers=auth())
    assert answer.status_code == 200
    parsed = SpeechHistoryDeletionStatus.model_validate(answer.json())
    assert (parsed.id, parsed.deleted) == (stt_id, True)
    assert [item["text"] for item in history(client).json()["data"]] == ["two", "one"]
    again = client.delete(f"{API}/speech/transcriptions/history/{stt_id}", headers=auth())
    assert again.status_code == 404


@OTHER_OWNERS
def test_another_owners_transcription_cannot_be_deleted(
    client: Client, three_heard: list[str], user: str, key: str
) -> None:
    stt_id = history(client).json()["data"][0]["id"]
    path = f"{API}/speech/transcriptions/history/{stt_id}"
    answer = client.delete(path, headers=auth(user, key))
    assert answer.status_code == 404
    assert error_of(answer)["type"] == "not_found"
    assert SandboxTranscription.objects.count() == 3


# --- files ---------------------------------------------------------------------------


def test_an_uploaded_file_is_an_sdk_file(client: Client) -> None:
    answer = upload_file(client)
    assert answer.status_code == 200
    parsed = File.model_validate(answer.json())
    assert re.fullmatch(r"file-[0-9a-f]{24}", parsed.id)
    assert (parsed.object, parsed.filename, parsed.purpose) == ("file", "report.pdf", "user_data")
    assert parsed.bytes_ == len(PDF)
    assert parsed.status == "processed"
    assert parsed.sha256 == hashlib.sha256(PDF).hexdigest()
    assert bytes(SandboxFile.objects.get(pk=parsed.id).data) == PDF


def test_a_file_is_retrieved_and_deleted_by_its_owner(client: Client) -> None:
    created = upload_file(client).json()
    path = f"{API}/files/{created['id']}"
    fetched = client.get(path, headers=auth())
    assert fetched.json() == created
    File.model_validate(fetched.json())
    deleted = client.delete(path, headers=auth())
    assert deleted.status_code == 200
    assert FileDeletionStatus.model_validate(deleted.json()).deleted is True
    assert deleted.json() == {"id": created["id"], "object": "file", "deleted": True}
    assert client.get(path, headers=auth()).status_code == 404
    assert client.delete(path, headers=auth()).status_code == 404


@OTHER_OWNERS
def test_another_owners_file_is_not_found(client: Client, user: str, key: str) -> None:
    file_id = upload_file(client).json()["id"]
    foreign_get = client.get(f"{API}/files/{file_id}", headers=auth(user, key))
    foreign_delete = client.delete(f"{API}/files/{file_id}", headers=auth(user, key))
    unknown = client.get(f"{API}/files/file-000000000000000000000000", headers=auth())
    assert foreign_get.status_code == foreign_delete.status_code == 404
    assert error_of(foreign_get)["type"] == error_of(unknown)["type"] == "not_found"
    assert SandboxFile.objects.filter(pk=file_id).exists()


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"purpose": "nonsense"}, "purpose"),
        ({"purpose": ""}, "purpose"),
        ({"name": "blob"}, "file"),
        ({"data": b""}, "file"),
    ],
    ids=["unknown-purpose", "no-purpose", "placeholder-filename", "empty"],
)
def test_a_bad_file_upload_is_refused_and_stores_nothing(
    client: Client, kwargs: dict[str, Any], param: str
) -> None:
    answer = upload_file(client, **kwargs)
    assert answer.status_code == 400
    assert error_of(answer)["code"] == param
    assert SandboxFile.objects.count() == 0


def test_a_file_method_that_mka1_lacks_is_not_allowed(client: Client) -> None:
    file_id = upload_file(client).json()["id"]
    answer = client.put(f"{API}/files/{file_id}", "{}", headers=auth())
    assert answer.status_code == 405
    assert answer["Allow"] == "GET, DELETE"


# --- feedback ------------------------------------------------------------------------


@pytest.fixture
def response_id(client: Client) -> str:
    answer = post_json(client, "/responses", {"model": MODEL, "input": "hello"})
    assert answer.status_code == 200
    return str(answer.json()["id"])


@pytest.mark.parametrize("rating", ["thumbs_up", "thumbs_down"])
def test_feedback_on_a_response_is_kept_as_sent(
    client: Client, response_id: str, rating: str
) -> None:
    body = {"id": response_id, "rating": rating}
    assert_sdk_request(CreateFeedbackRequest, body)
    answer = post_json(client, "/feedback/responses", body)
    # The SDK reads a created feedback from a 201.
    assert answer.status_code == 201
    parsed = CreateFeedbackResponse.model_validate(answer.json())
    # `id` is the id the feedback is about.
    assert (parsed.id, parsed.rating, parsed.description) == (response_id, rating, None)
    # Timestamps of the output the feedback is about: made, then last changed.
    made = SandboxResponse.objects.get(pk=response_id).created_at
    assert parsed.created_at == made.replace(microsecond=made.microsecond // 1000 * 1000)
    assert parsed.updated_at is not None
    assert parsed.updated_at >= parsed.created_at
    kept = SandboxFeedback.objects.get()
    assert (kept.response_id, kept.rating, kept.body) == (response_id, rating, body)


def test_each_feedback_call_is_kept(client: Client, response_id: str) -> None:
    for rating in ("thumbs_up", "thumbs_down"):
        post_json(client, "/feedback/responses", {"id": response_id, "rating": rating})
    assert list(SandboxFeedback.objects.values_list("rating", flat=True)) == [
        "thumbs_up",
        "thumbs_down",
    ]


def test_feedback_may_carry_a_description(client: Client, response_id: str) -> None:
    body = {"id": response_id, "rating": "thumbs_down", "description": "wrong city"}
    answer = post_json(client, "/feedback/responses", body)
    assert CreateFeedbackResponse.model_validate(answer.json()).description == "wrong city"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"rating": "thumbs_up"}, "id"),
        ({"rating": "heart"}, "rating"),
        ({"rating": "THUMBS_UP"}, "rating"),
        ({"rating": "thumbs_up", "description": "x" * 2001}, "description"),
        ({"rating": "thumbs_up", "description": 5}, "description"),
        ({}, None),
    ],
    ids=["no-id", "unknown-rating", "case", "long-description", "bad-description", "empty"],
)
def test_bad_feedback_is_refused(
    client: Client, response_id: str, body: dict[str, Any], param: str | None
) -> None:
    payload = {"id": response_id, **body} if param != "id" else body
    answer = post_json(client, "/feedback/responses", payload)
    assert answer.status_code == 400
    assert error_of(answer)["code"] == param
    assert SandboxFeedback.objects.count() == 0


@OTHER_OWNERS
def test_feedback_on_another_owners_response_is_not_found(
    client: Client, response_id: str, user: str, key: str
) -> None:
    body = {"id": response_id, "rating": "thumbs_up"}
    foreign = post_json(client, "/feedback/responses", body, user=user, key=key)
    assert foreign.status_code == 404
    assert SandboxFeedback.objects.count() == 0
    # Indistinguishable from a response that does not exist at all.
    SandboxResponse.objects.filter(pk=response_id).delete()
    missing = post_json(client, "/feedback/responses", body)
    assert foreign.json() == missing.json()
    assert error_of(missing)["type"] == "not_found"


def test_feedback_that_is_not_json_is_unsupported(client: Client, response_id: str) -> None:
    answer = client.post(f"{API}/feedback/responses", {"id": response_id}, headers=auth())
    assert answer.status_code == 415


# --- responses that see images and read documents ------------------------------------


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def respond(client: Client, content: list[dict[str, Any]], **kwargs: Any) -> "Answer":
    return post_json(
        client,
        "/responses",
        {"model": MODEL, "input": [{"role": "user", "content": content}], "store": True},
        **kwargs,
    )


def text_part(text: str) -> dict[str, Any]:
    return {"type": "input_text", "text": text}


def test_an_inline_image_is_seen_and_its_size_told(client: Client) -> None:
    image = {"type": "input_image", "image_url": data_uri(PNG, "image/png"), "detail": "auto"}
    assert_sdk_request(InputImage, image)
    answer = respond(client, [text_part("What is this?"), image])
    assert answer.status_code == 200
    parsed = ResponseObject.model_validate(answer.json())
    assert parsed.output_text == f"You said: What is this? — I see an image of {len(PNG)} bytes"


def test_an_image_by_file_id_is_seen(client: Client) -> None:
    file_id = upload_file(client, PNG, "photo.png", "vision").json()["id"]
    image = {"type": "input_image", "file_id": file_id}
    assert_sdk_request(InputImage, image)
    answer = respond(client, [text_part("And this?"), image])
    assert (
        answer.json()["output_text"] == f"You said: And this? — I see an image of {len(PNG)} bytes"
    )


@pytest.mark.parametrize(
    "file_data", [data_uri(PDF, "application/pdf"), base64.b64encode(PDF).decode()],
    ids=["data-uri", "bare-base64"],
)  # fmt: skip
def test_an_inline_document_is_read(client: Client, file_data: str) -> None:
    document = {"type": "input_file", "file_data": file_data, "filename": "report.pdf"}
    assert_sdk_request(InputFile, document)
    answer = respond(client, [text_part("Summarise"), document])
    assert answer.json()["output_text"] == (
        f"You said: Summarise — I read a document report.pdf of {len(PDF)} bytes"
    )


def test_a_document_by_file_id_is_read_under_its_uploaded_name(client: Client) -> None:
    file_id = upload_file(client, PDF, "q3.pdf").json()["id"]
    document = {"type": "input_file", "file_id": file_id}
    assert_sdk_request(InputFile, document)
    answer = respond(client, [text_part("Summarise"), document])
    assert answer.json()["output_text"] == (
        f"You said: Summarise — I read a document q3.pdf of {len(PDF)} bytes"
    )


def test_several_images_and_documents_are_described_in_order(client: Client) -> None:
    content = [
        text_part("Compare"),
        {"type": "input_image", "image_url": data_uri(b"abc", "image/jpeg")},
        {"type": "input_file", "file_data": data_uri(b"hello", "text/plain"), "filename": "a.txt"},
        {"type": "input_image", "image_url": data_uri(b"abcdef", "image/jpeg")},
    ]
    assert respond(client, content).json()["output_text"] == (
        "You said: Compare — I see an image of 3 bytes — I read a document a.txt of 5 bytes"
        " — I see an image of 6 bytes"
    )


def test_the_conversation_keeps_the_parts_as_sent(client: Client) -> None:
    conversation = post_json(client, "/conversations", {}).json()["id"]
    content = [
        text_part("What is this?"),
        {"type": "input_image", "image_url": data_uri(PNG, "image/png")},
    ]
    answer = post_json(
        client,
        "/responses",
        {
            "model": MODEL,
            "input": [{"role": "user", "content": content}],
            "conversation": conversation,
        },
    )
    assert answer.status_code == 200
    listed = client.get(f"{API}/conversations/{conversation}/items", headers=auth()).json()
    ConversationsItemsListResponse.model_validate(listed)
    question, reply = listed["data"]
    assert (question["role"], question["content"]) == ("user", content)
    assert reply["content"][0]["text"] == answer.json()["output_text"]


@OTHER_OWNERS
@pytest.mark.parametrize("part", ["input_image", "input_file"])
def test_another_owners_file_id_is_not_found(
    client: Client, user: str, key: str, part: str
) -> None:
    file_id = upload_file(client).json()["id"]
    answer = respond(
        client, [text_part("hi"), {"type": part, "file_id": file_id}], user=user, key=key
    )
    assert answer.status_code == 404
    assert error_of(answer)["type"] == "not_found"
    assert SandboxResponse.objects.count() == 0


def test_a_deleted_files_id_is_not_found(client: Client) -> None:
    file_id = upload_file(client).json()["id"]
    client.delete(f"{API}/files/{file_id}", headers=auth())
    answer = respond(client, [{"type": "input_file", "file_id": file_id}])
    assert answer.status_code == 404


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_image", "image_url": "data:image/png;base64,not base64!"},
        {"type": "input_image", "image_url": "data:image/png,rawbytes"},
        {"type": "input_image", "image_url": "data:;base64,AAAA"},
        {"type": "input_image", "image_url": "data:image/png;base64,"},
        {"type": "input_image", "image_url": "https://example.com/cat.png"},
        {"type": "input_image"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "file_id": "file-1"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "max"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,%%%", "filename": "a"},
        {"type": "input_file", "file_data": "QUJD"},
        {"type": "input_file", "file_url": "https://example.com/a.pdf", "filename": "a.pdf"},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "input_text"},
        "just a string",
    ],
    ids=[
        "bad-base64",
        "not-base64",
        "no-mime-type",
        "empty",
        "remote-url",
        "no-source",
        "two-sources",
        "bad-detail",
        "bad-file-data",
        "file-data-without-filename",
        "file-url",
        "unsupported-part",
        "text-without-text",
        "not-an-object",
    ],
)
def test_a_malformed_part_is_a_bad_request_and_stores_nothing(client: Client, part: Any) -> None:
    answer = respond(client, [text_part("look"), part])
    assert answer.status_code == 400
    assert error_of(answer)["code"] == "input"
    assert SandboxResponse.objects.count() == 0
    assert SandboxItem.objects.count() == 0


@pytest.mark.parametrize(
    "value",
    [
        [{"content": "no role"}],
        [{"role": "robot", "content": "hi"}],
        [{"type": "function_call_output", "role": "user", "content": "hi"}],
        [{"role": "user", "content": []}],
        [],
    ],
    ids=["no-role", "unknown-role", "not-a-message", "no-parts", "no-messages"],
)
def test_a_malformed_message_list_is_a_bad_request(client: Client, value: Any) -> None:
    answer = post_json(client, "/responses", {"model": MODEL, "input": value})
    assert answer.status_code == 400
    assert SandboxResponse.objects.count() == 0
