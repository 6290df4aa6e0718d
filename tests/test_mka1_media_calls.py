"""The MKA1 calls for what users send besides text: a voice note to transcribe, a file to
upload, a photo or a document as a response's input, a rating as feedback. Each body is
what the official SDK's models describe."""

from email import message_from_bytes
from email.policy import default as email_policy
from typing import Any

import responses
from meetkai_mka1.models import (
    CreateFeedbackRequest,
    InputFile,
    InputImage,
    TranscribeRequestBody,
    UploadFileRequestBody,
)
from meetkai_mka1.models.responsescreaterequest import ResponsesCreateRequest

from tests.support.mka1 import (
    API,
    USER,
    MakeClient,
    assert_sdk_request,
    sent_json,
)


def form_fields(request: Any) -> dict[Any, tuple[Any, Any, str]]:
    """A multipart/form-data body as {name: (filename, content, content type)}."""
    raw = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode() + request.body
    parsed = message_from_bytes(raw, policy=email_policy)
    fields = {}
    for part in parsed.iter_parts():
        fields[part.get_param("name", header="content-disposition")] = (
            part.get_filename(),
            part.get_payload(decode=True),
            part.get_content_type(),
        )
    return fields


def test_a_voice_note_is_sent_for_transcription_as_a_file(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    mocked.add("POST", f"{API}/speech/transcriptions", json={"text": "hello", "language": "en"})
    answer = make_client().transcribe(
        USER, filename="voice.ogg", content=b"OggS\x00voice", content_type="audio/ogg"
    )
    assert answer.data["text"] == "hello"
    fields = form_fields(mocked.calls[0].request)
    assert fields == {"file": ("voice.ogg", b"OggS\x00voice", "audio/ogg")}
    name, content, kind = fields["file"]
    TranscribeRequestBody.model_validate(
        {"file": {"fileName": name, "": content, "Content-Type": kind}}
    )


def test_a_large_photo_is_uploaded_as_a_user_data_file(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    mocked.add("POST", f"{API}/files", json={"id": "file-1", "object": "file"})
    make_client().upload_file(
        USER, filename="photo.jpg", content=b"\xff\xd8jpeg", content_type="image/jpeg"
    )
    fields = form_fields(mocked.calls[0].request)
    assert fields["file"] == ("photo.jpg", b"\xff\xd8jpeg", "image/jpeg")
    assert fields["purpose"][1] == b"user_data"
    UploadFileRequestBody.model_validate(
        {
            "file": {"fileName": "photo.jpg", "": b"\xff\xd8jpeg", "Content-Type": "image/jpeg"},
            "purpose": "user_data",
        }
    )


def test_a_rating_is_feedback_on_the_response(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    mocked.add("POST", f"{API}/feedback/responses", json={"id": "fb_1", "rating": "thumbs_down"})
    make_client().create_feedback(USER, response_id="resp_abc123", rating="thumbs_down")
    body = sent_json(mocked.calls[0])
    assert body == {"id": "resp_abc123", "rating": "thumbs_down"}
    assert_sdk_request(CreateFeedbackRequest, body)


def test_a_photo_and_a_document_go_in_a_responses_input_the_sdk_accepts(
    mocked: responses.RequestsMock, make_client: MakeClient
) -> None:
    mocked.add("POST", f"{API}/responses", json={"id": "resp_x", "object": "response"})
    image = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
    document = {"type": "input_file", "file_id": "file-1", "filename": "report.pdf"}
    message = [
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "What is this?"}, image, document],
        }
    ]
    make_client().create_response(
        USER,
        conversation_id="conv_1",
        message=message,
        previous_response_id=None,
        channel="whatsapp",
    )
    body = sent_json(mocked.calls[0])
    assert body["input"] == message
    assert_sdk_request(ResponsesCreateRequest, body)
    assert_sdk_request(InputImage, image)
    assert_sdk_request(InputFile, document)
