"""Playing the WhatsApp user: webhook messages for photos, documents, audio and voice
notes (their media held by the Graph API stand-in), reactions and the user_preferences
stop/resume webhook, in Meta's shapes; the sandbox phone page and `sandbox_whatsapp`
send them."""

import hashlib
import re
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client

from multichannel.sandbox import phone_views
from multichannel.sandbox import whatsapp as wa
from multichannel.sandbox.audio import spoken_wav, transcript_of
from multichannel.sandbox.management.commands import sandbox_whatsapp
from multichannel.sandbox.models import SandboxGraphMessage, SandboxMedia
from tests.support.media import PDF, PNG, media_message, voice_note

pytestmark = pytest.mark.django_db

PHONE = "15557654321"


def held(media: dict[str, Any]) -> SandboxMedia:
    """The Graph API stand-in's copy of the media a message names, checked against it."""
    stored = SandboxMedia.objects.get(pk=media["id"])
    assert (stored.mime_type, stored.sha256) == (media["mime_type"], media["sha256"])
    assert stored.sha256 == hashlib.sha256(bytes(stored.data)).hexdigest()
    return stored


# --- webhook messages ----------------------------------------------------------------


def test_an_image_message_names_held_media_with_its_caption() -> None:
    event = media_message(PNG, mime_type="image/png", filename="p.png", caption="What is it?")
    message = event["message"]
    assert message["type"] == "image"
    assert set(message["image"]) == {"caption", "mime_type", "sha256", "id"}
    assert message["image"]["caption"] == "What is it?"
    assert bytes(held(message["image"]).data) == PNG


def test_an_image_without_a_caption_has_no_caption_key() -> None:
    image = media_message(PNG, mime_type="image/png")["message"]["image"]
    assert set(image) == {"mime_type", "sha256", "id"}


def test_a_document_message_carries_its_filename() -> None:
    event = media_message(
        PDF, mime_type="application/pdf", filename="q3.pdf", caption="Summarise", wa_id=PHONE
    )
    message = event["message"]
    assert (message["from"], message["type"]) == (PHONE, "document")
    assert message["document"]["filename"] == "q3.pdf"
    assert message["document"]["caption"] == "Summarise"
    assert bytes(held(message["document"]).data) == PDF


def test_a_voice_note_is_audio_marked_voice_that_transcribes_to_its_text() -> None:
    message = voice_note("Where is my order?", seconds=0.5)["message"]
    assert message["type"] == "audio"
    assert set(message["audio"]) == {"mime_type", "sha256", "id", "voice"}
    assert message["audio"]["voice"] is True
    assert transcript_of(bytes(held(message["audio"]).data)) == "Where is my order?"


def test_an_audio_file_is_not_a_voice_note_unless_said() -> None:
    ogg = b"OggS" + bytes(64)
    message = media_message(ogg, mime_type="audio/ogg; codecs=opus")["message"]
    assert message["audio"]["voice"] is False
    assert message["audio"]["mime_type"] == "audio/ogg; codecs=opus"


def test_media_event_builds_meta_shapes_exactly() -> None:
    common: dict[str, Any] = {
        "media_id": "1234567890123456",
        "mime_type": "x/y",
        "sha256": "ab" * 32,
    }
    event = wa.media_event("document", **common, filename="a.pdf", caption="c", message_id="w.1")
    assert event["message"]["document"] == {
        "caption": "c",
        "filename": "a.pdf",
        "mime_type": "x/y",
        "sha256": "ab" * 32,
        "id": "1234567890123456",
    }
    assert event["message"]["id"] == "w.1"
    audio = wa.media_event("audio", **common, caption="ignored", voice=True)["message"]["audio"]
    assert audio == {
        "mime_type": "x/y",
        "sha256": "ab" * 32,
        "id": "1234567890123456",
        "voice": True,
    }
    with pytest.raises(ValueError, match="not a media message type"):
        wa.media_object("text", **common)


def test_message_event_keeps_its_placeholder_media_without_real_media() -> None:
    image = wa.message_event(message_type="image")["message"]["image"]
    assert image["mime_type"] == "application/octet-stream"
    assert not SandboxMedia.objects.filter(pk=image["id"]).exists()


def test_a_reaction_names_the_message_and_emoji() -> None:
    event = wa.reaction_event("wamid.OURS", "\U0001f44e", wa_id=PHONE)
    assert event["message"]["type"] == "reaction"
    assert event["message"]["reaction"] == {"message_id": "wamid.OURS", "emoji": "\U0001f44e"}
    assert event["contact"]["wa_id"] == PHONE


def test_a_removed_reaction_leaves_the_emoji_out_as_meta_does() -> None:
    event = wa.reaction_event("wamid.OURS", "")
    assert event["message"]["reaction"] == {"message_id": "wamid.OURS"}


@pytest.mark.parametrize("value", ["stop", "resume"])
def test_user_preferences_webhook_has_meta_shape(value: str) -> None:
    payload = wa.user_preferences_payload(PHONE, value, timestamp=1739321024)
    change = payload["entry"][0]["changes"][0]
    assert change["field"] == "user_preferences"
    assert change["value"]["contacts"] == [{"profile": {"name": "Sandbox User"}, "wa_id": PHONE}]
    assert change["value"]["user_preferences"] == [
        {
            "wa_id": PHONE,
            "detail": f"User requested to {value} marketing messages",
            "category": "marketing_messages",
            "value": value,
            "timestamp": 1739321024,
        }
    ]
    assert "messages" not in change["value"]


def test_user_preferences_knows_only_stop_and_resume() -> None:
    with pytest.raises(ValueError, match="stop or resume"):
        wa.user_preferences_payload(PHONE, "STOP")


def test_media_webhooks_are_accepted_by_our_webhook(post_webhook: Any) -> None:
    events = [
        media_message(PNG, mime_type="image/png", caption="hi", wa_id=PHONE),
        voice_note("hello", wa_id=PHONE),
        wa.reaction_event("wamid.OURS", "\U0001f44d", wa_id=PHONE),
    ]
    assert post_webhook(wa.webhook_payload(events)).status_code == 200
    assert post_webhook(wa.user_preferences_payload(PHONE, "stop")).status_code == 200


# --- the sandbox phone page ----------------------------------------------------------


@pytest.fixture
def delivered(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The webhook payloads the phone page posts (answered 200)."""
    posted: list[dict[str, Any]] = []

    def record(payload: dict[str, Any]) -> int:
        posted.append(payload)
        return 200

    monkeypatch.setattr(phone_views, "webhook_post", record)
    return posted


def sent_message(delivered: list[dict[str, Any]]) -> dict[str, Any]:
    (payload,) = delivered
    (message,) = payload["entry"][0]["changes"][0]["value"]["messages"]
    assert isinstance(message, dict)
    return message


def send(client: Client, **fields: Any) -> Any:
    return client.post(f"/sandbox/whatsapp/?phone={PHONE}", {"phone": PHONE, **fields})


def test_the_page_offers_attachments_without_inline_script_or_style(client: Client) -> None:
    page = client.get("/sandbox/whatsapp/").content.decode()
    assert 'enctype="multipart/form-data"' in page
    assert 'type="file" name="attachment"' in page
    assert 'name="voice"' in page
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert "<style" not in page
    assert not re.search(r"\sstyle=", page)
    assert not re.search(r"\son[a-z]+=", page)


def test_a_photo_is_uploaded_then_sent_with_its_caption(
    client: Client, delivered: list[dict[str, Any]]
) -> None:
    photo = SimpleUploadedFile("cat.png", PNG, content_type="image/png")
    answer = send(client, text="Is this a cat?", attachment=photo)
    assert answer.status_code == 302
    message = sent_message(delivered)
    assert (message["from"], message["type"]) == (PHONE, "image")
    assert message["image"]["caption"] == "Is this a cat?"
    assert bytes(held(message["image"]).data) == PNG


def test_a_document_is_sent_with_its_filename(
    client: Client, delivered: list[dict[str, Any]]
) -> None:
    document = SimpleUploadedFile("q3.pdf", PDF, content_type="application/pdf")
    send(client, attachment=document)
    message = sent_message(delivered)
    assert message["type"] == "document"
    assert message["document"]["filename"] == "q3.pdf"
    assert "caption" not in message["document"]
    assert held(message["document"]).filename == "q3.pdf"


def test_typed_text_can_be_said_as_a_voice_note(
    client: Client, delivered: list[dict[str, Any]]
) -> None:
    send(client, text="What is the weather?", voice="on")
    message = sent_message(delivered)
    assert message["type"] == "audio"
    assert message["audio"]["voice"] is True
    stored = held(message["audio"])
    assert stored.mime_type == "audio/wav"
    assert bytes(stored.data) == spoken_wav("What is the weather?")


def test_an_attached_audio_file_is_sent_as_a_voice_note_when_asked(
    client: Client, delivered: list[dict[str, Any]]
) -> None:
    audio = SimpleUploadedFile("note.ogg", b"OggS" + bytes(32), content_type="audio/ogg")
    send(client, voice="on", attachment=audio)
    message = sent_message(delivered)
    assert (message["type"], message["audio"]["mime_type"]) == ("audio", "audio/ogg")
    assert message["audio"]["voice"] is True


def test_a_text_is_still_a_text(client: Client, delivered: list[dict[str, Any]]) -> None:
    send(client, text="Hello")
    assert sent_message(delivered)["text"] == {"body": "Hello"}
    assert SandboxMedia.objects.count() == 0


def test_nothing_to_send_is_refused_on_the_page(
    client: Client, delivered: list[dict[str, Any]]
) -> None:
    answer = send(client, text="  ")
    assert answer.status_code == 200
    assert "Write something or attach a file first." in answer.content.decode()
    assert delivered == []


def test_a_photo_sent_from_the_page_reaches_our_webhook(client: Client) -> None:
    # Not intercepted: the page posts the signed webhook in process.
    photo = SimpleUploadedFile("cat.png", PNG, content_type="image/png")
    answer = send(client, text="caption", attachment=photo)
    assert (answer.status_code, answer["Location"]) == (302, f"/sandbox/whatsapp/?phone={PHONE}")


def test_the_page_shows_texts_and_templates_sent_to_the_phone(client: Client) -> None:
    SandboxGraphMessage.objects.create(
        phone_number_id="1",
        kind="template",
        recipient=PHONE,
        wamid="wamid.T",
        body={"template": {"name": "reengage", "language": {"code": "en_US"}}},
    )
    SandboxGraphMessage.objects.create(
        phone_number_id="1",
        kind="typing",
        recipient="",
        body={"status": "read", "message_id": "wamid.X", "typing_indicator": {"type": "text"}},
    )
    page = client.get(f"/sandbox/whatsapp/?phone={PHONE}").content.decode()
    assert "[template reengage (en_US)]" in page


# --- manage.py sandbox_whatsapp ------------------------------------------------------


@pytest.fixture
def command_delivered(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    posted: list[dict[str, Any]] = []

    def record(payload: dict[str, Any]) -> int:
        posted.append(payload)
        return 200

    monkeypatch.setattr(sandbox_whatsapp, "webhook_post", record)
    return posted


def run(*args: str) -> str:
    out = StringIO()
    call_command("sandbox_whatsapp", *args, stdout=out)
    return out.getvalue()


def test_the_command_sends_a_file_as_the_message_its_type_calls_for(
    tmp_path: Path, command_delivered: list[dict[str, Any]]
) -> None:
    photo = tmp_path / "cat.png"
    photo.write_bytes(PNG)
    output = run("Is this a cat?", "--from", PHONE, "--file", str(photo))
    message = sent_message(command_delivered)
    assert output == f"delivered {message['id']} (webhook answered 200)\n"
    assert message["image"]["caption"] == "Is this a cat?"
    assert bytes(held(message["image"]).data) == PNG


def test_the_command_sends_a_document_with_its_name(
    tmp_path: Path, command_delivered: list[dict[str, Any]]
) -> None:
    document = tmp_path / "q3.pdf"
    document.write_bytes(PDF)
    run("--file", str(document), "--type", "document")
    message = sent_message(command_delivered)
    assert (message["document"]["filename"], message["document"]["mime_type"]) == (
        "q3.pdf",
        "application/pdf",
    )


def test_the_command_speaks_a_voice_note(command_delivered: list[dict[str, Any]]) -> None:
    run("Read me the news", "--type", "audio", "--voice")
    audio = sent_message(command_delivered)["audio"]
    assert audio["voice"] is True
    assert transcript_of(bytes(held(audio).data)) == "Read me the news"


def test_the_command_reacts_to_a_message(command_delivered: list[dict[str, Any]]) -> None:
    run("--react-to", "wamid.OURS", "--emoji", "\U0001f44e")
    assert sent_message(command_delivered)["reaction"] == {
        "message_id": "wamid.OURS",
        "emoji": "\U0001f44e",
    }


def test_the_command_still_sends_text_by_default(command_delivered: list[dict[str, Any]]) -> None:
    run()
    assert sent_message(command_delivered)["text"] == {"body": "Hello"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--file", "{png}", "--type", "text"), "--file goes with --type image, audio, document"),
        (("--file", "/nonexistent/x.png"), "is not a readable file"),
        (("--voice", "--type", "image"), "--voice goes with --type audio"),
        (("--react-to", "wamid.X", "--type", "text"), "--react-to sends a reaction"),
    ],
)
def test_the_command_refuses_what_cannot_be_sent(
    tmp_path: Path, command_delivered: list[dict[str, Any]], args: tuple[str, ...], message: str
) -> None:
    png = tmp_path / "p.png"
    png.write_bytes(PNG)
    with pytest.raises(CommandError, match=message):
        run(*(arg.format(png=png) for arg in args))
    assert command_delivered == []
    assert SandboxMedia.objects.count() == 0
