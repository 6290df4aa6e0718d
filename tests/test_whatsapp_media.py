"""WhatsApp as people use it: voice notes, photos and documents understood through MKA1,
ratings by reaction, the 24-hour window and opting out. Through the sandbox's Graph API
and MKA1 stand-ins in process (real HTTP bodies; the stand-in's answers are the SDK's)."""

import json
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from meetkai_mka1.models import CreateFeedbackResponse, File, TranscriptionResponse

from audit.models import AuditEvent
from multichannel.models import Media, Turn, UserMessage
from multichannel.sandbox import whatsapp as wa
from multichannel.sandbox.faults import fault_inject
from multichannel.sandbox.inspect import feedback_for, held_for
from multichannel.sandbox.models import SandboxGraphMessage
from multichannel.tasks import recover_unfinished
from tests.support.media import PDF, PNG, media_message, voice_note
from tests.support.outgoing import Calls, response_creates, sent_texts
from tests.support.webhooks import PostWebhook
from whatsapp.models import OutboundMessage, WhatsAppIdentity

pytestmark = pytest.mark.django_db

PHONE = "15551234567"


@pytest.fixture
def receive(post_webhook: PostWebhook, django_capture_on_commit_callbacks):
    """Deliver a webhook (of events, or a whole payload) and let the queued work run."""

    def receive(*events: dict, payload: dict | None = None) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            answer = post_webhook(payload or wa.webhook_payload(list(events)))
            assert answer.status_code == 200

    return receive


def run_due_work() -> None:
    past = timezone.now() - timedelta(seconds=1)
    UserMessage.objects.exclude(next_attempt_at=None).update(next_attempt_at=past)
    recover_unfinished.call_local()


def graph_calls(kind: str) -> list[SandboxGraphMessage]:
    return list(SandboxGraphMessage.objects.filter(kind=kind).order_by("id"))


def event_of(action: str) -> AuditEvent:
    return AuditEvent.objects.get(action=action)


# --- voice notes ----------------------------------------------------------------------------


def test_a_voice_note_is_transcribed_and_the_transcript_answered(
    receive, mka1_calls: Calls
) -> None:
    receive(voice_note("What is the capital of France?"))
    message = UserMessage.objects.get()
    assert (message.kind, message.state) == (UserMessage.Kind.AUDIO, UserMessage.State.DELIVERED)
    assert sent_texts() == ["You said: What is the capital of France?"]
    media = Media.objects.get()
    assert media.transcript == "What is the capital of France?"
    assert media.stored
    assert Turn.objects.get().input_text == "What is the capital of France?"
    # What the assistant heard is in the ledger, with the transcript MKA1 gave.
    heard = event_of("speech.transcriptions")
    TranscriptionResponse.model_validate_json(heard.full_response)
    assert json.loads(heard.full_response)["text"] == "What is the capital of France?"
    assert heard.context["media_sha256"] == media.sha256
    assert heard.end_user_id == message.end_user_id
    answered = event_of("responses.create")
    assert answered.context["input"] == "What is the capital of France?"
    assert [body["input"] for body in response_creates(mka1_calls)] == [
        "What is the capital of France?"
    ]


def test_a_redelivered_voice_note_is_downloaded_transcribed_and_answered_once(
    receive, mka1_calls: Calls
) -> None:
    event = voice_note("Only once, please")
    payload = wa.webhook_payload([event])
    receive(payload=payload)
    receive(payload=payload)  # Meta delivers it again
    assert UserMessage.objects.count() == 1
    assert len([c for c in mka1_calls if c[1] == "/speech/transcriptions"]) == 1
    assert len(response_creates(mka1_calls)) == 1
    assert sent_texts() == ["You said: Only once, please"]
    assert held_for(UserMessage.objects.get().end_user_id)["transcriptions"] == 1


def test_a_transcription_failure_is_retried_without_downloading_again(
    receive, mka1_calls: Calls, monkeypatch
) -> None:
    def monkeypatch_fetch_forbidden() -> None:
        def refuse(media):
            raise AssertionError("downloaded twice")

        monkeypatch.setattr("whatsapp.worker.media_fetch", refuse)
        from multichannel import channels

        whatsapp = channels._contributions["whatsapp"]
        monkeypatch.setitem(
            channels._contributions,
            "whatsapp",
            type(whatsapp)(**{**whatsapp.__dict__, "fetch_media": refuse}),
        )

    fault_inject("speech.transcriptions", status=500, times=4)  # past the client's retries
    receive(voice_note("Second time lucky"))
    message = UserMessage.objects.get()
    assert message.state == UserMessage.State.QUEUED
    assert Media.objects.get().stored  # kept before MKA1 failed
    failed = event_of("speech.transcriptions.failed")
    assert failed.context["status"] == 500
    stored_name = Media.objects.get().stored_name
    monkeypatch_fetch_forbidden()
    run_due_work()
    assert sent_texts() == ["You said: Second time lucky"]
    assert Media.objects.get().stored_name == stored_name
    # The failed call and its retry; the download was not repeated (fetching raises).
    assert len([c for c in mka1_calls if c[1] == "/speech/transcriptions"]) == 2


# --- photos and documents -------------------------------------------------------------------


def test_a_photo_with_a_caption_goes_to_mka1_inline_and_the_audit_names_it_by_digest(
    receive, mka1_calls: Calls
) -> None:
    receive(media_message(PNG, mime_type="image/png", caption="What is this?"))
    assert sent_texts() == [f"You said: What is this? — I see an image of {len(PNG)} bytes"]
    (sent,) = response_creates(mka1_calls)
    content = sent["input"][0]["content"]
    assert content[0] == {"type": "input_text", "text": "What is this?"}
    assert content[1]["type"] == "input_image"
    assert content[1]["image_url"].startswith("data:image/png;base64,")
    media = Media.objects.get()
    line = event_of("responses.create")
    assert line.context["input"][0]["content"][1] == {
        "type": "input_image",
        "sha256": media.sha256,
        "bytes": len(PNG),
        "mime_type": "image/png",
        "sent_as": "data_uri",
    }
    assert "base64" not in json.dumps(line.context)  # by reference, not megabytes


def test_a_photo_without_a_caption_is_asked_the_default_question(receive) -> None:
    receive(media_message(PNG, mime_type="image/png"))
    assert sent_texts() == [
        f"You said: {settings.MEDIA_IMAGE_PROMPT} — I see an image of {len(PNG)} bytes"
    ]


def test_a_pdf_is_read_as_an_input_file(receive, mka1_calls: Calls) -> None:
    receive(media_message(PDF, mime_type="application/pdf", filename="report.pdf"))
    assert sent_texts() == [
        f"You said: {settings.MEDIA_DOCUMENT_PROMPT} — I read a document report.pdf of "
        f"{len(PDF)} bytes"
    ]
    (sent,) = response_creates(mka1_calls)
    part = sent["input"][0]["content"][1]
    assert part["type"] == "input_file"
    assert part["filename"] == "report.pdf"
    assert part["file_data"].startswith("data:application/pdf;base64,")


def test_a_large_file_is_uploaded_once_and_sent_by_id(receive, mka1_calls: Calls, settings) -> None:
    settings.MKA1_INLINE_MEDIA_MAX_BYTES = 100  # the PDF is larger
    receive(media_message(PDF, mime_type="application/pdf", filename="big.pdf"))
    (sent,) = response_creates(mka1_calls)
    part = sent["input"][0]["content"][1]
    uploaded = event_of("files.create")
    file = File.model_validate_json(uploaded.full_response)
    assert part == {"type": "input_file", "file_id": file.id, "filename": "big.pdf"}
    assert Media.objects.get().mka1_file_id == file.id
    assert event_of("responses.create").context["input"][0]["content"][1]["file_id"] == file.id
    assert held_for(UserMessage.objects.get().end_user_id)["files"] == 1


def test_an_oversized_file_is_refused_with_a_clear_reply(
    receive, mka1_calls: Calls, settings
) -> None:
    settings.MEDIA_MAX_BYTES = 50
    receive(media_message(PDF, mime_type="application/pdf", filename="big.pdf"))
    assert sent_texts() == ["Sorry, I couldn't use your file: it is larger than 50 bytes."]
    assert response_creates(mka1_calls) == []
    assert not Media.objects.get().stored


def test_a_file_that_does_not_match_its_checksum_is_refused(receive, mka1_calls: Calls) -> None:
    event = media_message(PNG, mime_type="image/png", caption="tampered?")
    event["message"]["image"]["sha256"] = "0" * 64
    receive(event)
    assert sent_texts() == [
        "Sorry, I couldn't use your file: it arrived damaged (its checksum does not match)."
    ]
    assert response_creates(mka1_calls) == []


def test_an_expired_download_url_is_fetched_afresh(receive, monkeypatch) -> None:
    from whatsapp.graph import GraphClient

    asked: list[str] = []
    original = GraphClient.media_info

    def media_info(self, media_id: str):
        asked.append(media_id)
        return original(self, media_id)

    monkeypatch.setattr(GraphClient, "media_info", media_info)
    fault_inject("graph.media.download", status=404, times=1)  # the URL ran out
    receive(media_message(PNG, mime_type="image/png", caption="still there?"))
    assert len(asked) == 2  # a second media-info call gave a fresh URL
    assert sent_texts() == [f"You said: still there? — I see an image of {len(PNG)} bytes"]


def test_a_download_failing_for_long_is_retried_then_explained(receive, settings) -> None:
    settings.TURN_MAX_ATTEMPTS = 2
    fault_inject("graph.media.download", status=503, times=100)
    receive(media_message(PNG, mime_type="image/png"))
    assert UserMessage.objects.get().state == UserMessage.State.QUEUED
    run_due_work()
    assert sent_texts() == ["Sorry, I couldn't use your file: I could not download it."]


def test_a_file_gone_for_good_gets_a_clear_reply(receive) -> None:
    event = media_message(PNG, mime_type="image/png")
    event["message"]["image"]["id"] = "no-such-media-id"
    receive(event)
    assert sent_texts() == ["Sorry, I couldn't use your file: I could not download it."]


# --- alive: typing, quoting -----------------------------------------------------------------


def test_typing_shows_before_the_answer(receive) -> None:
    receive(wa.message_event(text="hi"))
    kinds = [m.kind for m in SandboxGraphMessage.objects.order_by("id")]
    assert kinds == ["typing", "text"]


def test_a_reply_quotes_its_message_when_the_user_wrote_since(receive) -> None:
    now = int(time.time())
    first = wa.message_event(text="first question", timestamp=now - 2)
    second = wa.message_event(text="second question", timestamp=now - 1)
    receive(first, second)  # both queued before either is answered
    texts = graph_calls("text")
    assert [t.body["text"]["body"] for t in texts] == [
        "You said: first question",
        "You said: second question",
    ]
    assert texts[0].body["context"] == {"message_id": first["message"]["id"]}
    assert "context" not in texts[1].body  # nothing came after it


# --- reactions are ratings ------------------------------------------------------------------


def test_thumbs_up_and_down_are_one_feedback_call_each_and_never_a_reply(receive) -> None:
    receive(wa.message_event(text="rate me"))
    reply = OutboundMessage.objects.get()
    assert reply.wamid is not None
    turn = Turn.objects.get()
    receive(wa.reaction_event(reply.wamid, "\U0001f44d"))
    receive(wa.reaction_event(reply.wamid, "\U0001f44e\U0001f3fd"))  # a skin tone
    assert [f.rating for f in feedback_for(turn.response_id)] == ["thumbs_up", "thumbs_down"]
    events = AuditEvent.objects.filter(action="feedback.create").order_by("sequence")
    assert [e.context["rating"] for e in events] == ["thumbs_up", "thumbs_down"]
    for event in events:
        CreateFeedbackResponse.model_validate_json(event.full_response)
        assert event.response_id == turn.response_id
    turn.refresh_from_db()
    assert turn.feedback == "thumbs_down"
    assert len(graph_calls("text")) == 1  # only the answer: reactions are never replied to


def test_other_emoji_and_a_removed_reaction_are_stored_without_a_call(receive) -> None:
    receive(wa.message_event(text="rate me"))
    reply = OutboundMessage.objects.get()
    assert reply.wamid is not None
    receive(wa.reaction_event(reply.wamid, "\U0001f44d"))
    receive(wa.reaction_event(reply.wamid, "\u2764\ufe0f"))  # a heart: not a rating
    receive(wa.reaction_event(reply.wamid, ""))  # taken back
    assert AuditEvent.objects.filter(action="feedback.create").count() == 1
    assert UserMessage.objects.filter(kind=UserMessage.Kind.FEEDBACK).count() == 3
    assert Turn.objects.get().feedback == ""  # taken back
    assert len(graph_calls("text")) == 1


# --- the 24-hour window -----------------------------------------------------------------------


def test_outside_the_window_a_reply_goes_out_as_the_template(receive, settings) -> None:
    settings.WHATSAPP_REENGAGE_TEMPLATE = "reengage:en_US"
    old = int((timezone.now() - timedelta(hours=25)).timestamp())
    receive(wa.message_event(text="are you there?", timestamp=old))
    assert graph_calls("text") == []  # never free text
    (template,) = graph_calls("template")
    assert template.body["template"] == {"name": "reengage", "language": {"code": "en_US"}}
    assert UserMessage.objects.get().state == UserMessage.State.DELIVERED
    assert OutboundMessage.objects.get().template == "reengage"


def test_outside_the_window_without_a_template_the_reply_fails_with_the_reason(
    receive,
) -> None:
    old = int((timezone.now() - timedelta(hours=25)).timestamp())
    receive(wa.message_event(text="are you there?", timestamp=old))
    message = UserMessage.objects.get()
    assert message.state == UserMessage.State.FAILED
    assert "24-hour customer-service window" in message.error
    assert graph_calls("text") == []


# --- opting out ----------------------------------------------------------------------------


def test_stop_silences_everything_but_its_confirmation_until_start(
    receive, mka1_calls: Calls
) -> None:
    receive(wa.message_event(text="stop"))
    assert sent_texts() == [settings.WHATSAPP_STOP_REPLY]
    assert WhatsAppIdentity.objects.get().opted_out_at is not None
    receive(wa.message_event(text="are you still there?"))
    assert response_creates(mka1_calls) == []
    assert sent_texts() == [settings.WHATSAPP_STOP_REPLY]  # nothing more
    receive(wa.message_event(text="Start"))
    receive(wa.message_event(text="hello again"))
    assert sent_texts() == [
        settings.WHATSAPP_STOP_REPLY,
        settings.WHATSAPP_START_REPLY,
        "You said: hello again",
    ]
    actions = list(
        AuditEvent.objects.filter(action__startswith="optout").values_list("action", flat=True)
    )
    assert actions == ["optout.stop", "optout.start"]


def test_metas_user_preferences_stop_and_resume(receive) -> None:
    receive(wa.message_event(wa_id=PHONE, text="hi"))
    receive(payload=wa.user_preferences_payload(PHONE, "stop"))
    assert WhatsAppIdentity.objects.get().opted_out_at is not None
    receive(wa.message_event(wa_id=PHONE, text="anyone?"))
    assert sent_texts() == ["You said: hi"]
    receive(payload=wa.user_preferences_payload(PHONE, "resume"))
    receive(wa.message_event(wa_id=PHONE, text="back"))
    assert sent_texts() == ["You said: hi", "You said: back"]
    sources = AuditEvent.objects.filter(action__startswith="optout").values_list(
        "context", flat=True
    )
    assert [c["source"] for c in sources] == ["user_preferences", "user_preferences"]


# --- the database away just after MKA1 did the work -----------------------------------------


@pytest.fixture
def saves_fail_once(monkeypatch):
    """The next save of a Media row's given field meets a locked database, once."""
    from django.db import OperationalError

    original = Media.save

    def fail_once(field: str) -> dict:
        left = {"failures": 1}

        def save(self, *args, **kwargs):
            if field in (kwargs.get("update_fields") or ()) and left["failures"]:
                left["failures"] -= 1
                raise OperationalError("database is locked")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Media, "save", save)
        return left

    return fail_once


def test_a_transcript_is_kept_with_its_audit_event_through_a_database_outage(
    receive, mka1_calls: Calls, saves_fail_once
) -> None:
    left = saves_fail_once("transcribed")
    receive(voice_note("Kept despite the lock"))
    assert left["failures"] == 0  # the outage happened, after MKA1 transcribed it
    assert len([call for call in mka1_calls if call[1] == "/speech/transcriptions"]) == 1
    assert AuditEvent.objects.filter(action="speech.transcriptions").count() == 1
    assert Media.objects.get().transcript == "Kept despite the lock"
    assert sent_texts() == ["You said: Kept despite the lock"]
    assert held_for(UserMessage.objects.get().end_user_id)["transcriptions"] == 1


def test_an_uploaded_file_is_kept_with_its_audit_event_through_a_database_outage(
    receive, mka1_calls: Calls, settings, saves_fail_once
) -> None:
    settings.MKA1_INLINE_MEDIA_MAX_BYTES = 100  # the PDF is uploaded
    left = saves_fail_once("mka1_file_id")
    receive(media_message(PDF, mime_type="application/pdf", filename="big.pdf"))
    assert left["failures"] == 0
    assert len([call for call in mka1_calls if call[1] == "/files"]) == 1
    assert AuditEvent.objects.filter(action="files.create").count() == 1
    assert Media.objects.get().mka1_file_id
    assert held_for(UserMessage.objects.get().end_user_id)["files"] == 1
    assert UserMessage.objects.get().state == UserMessage.State.DELIVERED
