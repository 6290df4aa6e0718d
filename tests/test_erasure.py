"""A person's erasure, end to end: at MKA1 (the stand-in holds nothing of theirs), in
our database (no text of theirs left), and in the ledger (their events keep row, digest
and hash, lose their content, and everything still verifies: database, exports old and
new, checkpoints, proofs). Resumable after a crash at any step; refused under a legal
hold; asked for from WhatsApp; and never by an auditor."""

import json
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core import checks, serializers
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone
from django.utils.module_loading import import_string

from audit.models import AuditEvent
from multichannel import privacy
from multichannel.models import EndUser, Erasure, LegalHold, Turn, UserMessage
from multichannel.sandbox import whatsapp as wa
from multichannel.sandbox.faults import fault_inject
from multichannel.sandbox.inspect import held_for
from tests.support.audit_ledger import checkpoint, export, failure, record, run
from tests.support.media import PDF, PNG, media_message, voice_note
from tests.support.outgoing import sent_texts
from tests.support.webhooks import PostWebhook
from whatsapp.models import InboundMessage, OutboundMessage, WebhookDelivery, WhatsAppIdentity
from whatsapp.privacy import erased_id_hash

pytestmark = pytest.mark.django_db

PHONE = "15551234567"
OTHER = "15557654321"
# Every text of the person's carries this word; nothing of theirs may keep it.
MARK = "zebra"
NOTHING = {"responses": 0, "conversations": 0, "items": 0, "files": 0, "transcriptions": 0}
# What our database holds, besides the MKA1 and Graph stand-ins.
OUR_APPS = ("multichannel", "whatsapp", "web", "audit", "sessions")


@pytest.fixture(autouse=True)
def _site(settings: Any) -> None:
    settings.SITE_URL = "http://testserver"
    settings.MKA1_INLINE_MEDIA_MAX_BYTES = 100  # documents go up as files (files.create)


@pytest.fixture
def receive(post_webhook: PostWebhook, django_capture_on_commit_callbacks: Any) -> Callable:
    def receive(*events: dict[str, Any]) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            assert post_webhook(wa.webhook_payload(list(events))).status_code == 200

    return receive


def say(receive: Callable, text: str, wa_id: str = PHONE) -> None:
    receive(wa.message_event(wa_id=wa_id, text=text))


@pytest.fixture
def person(receive: Callable, django_capture_on_commit_callbacks: Any) -> EndUser:
    """Someone with WhatsApp and web turns, a voice note, a photo, a document, a sign-in
    and a session; and someone else, whose data must survive."""
    say(receive, f"{MARK} one: what is a {MARK}?")
    receive(voice_note(f"{MARK} spoken words", wa_id=PHONE))
    receive(media_message(PNG, mime_type="image/png", caption=f"{MARK} photo", wa_id=PHONE))
    receive(
        media_message(
            PDF, mime_type="application/pdf", filename=f"{MARK}.pdf", caption="read", wa_id=PHONE
        )
    )
    say(receive, "LOGIN")
    token = sent_texts(PHONE)[-1].split("/signin/")[1].split()[0]
    browser = Client()
    browser.get(f"/signin/{token}")
    assert browser.post("/signin").status_code == 302
    with django_capture_on_commit_callbacks(execute=True):
        sent = browser.post(
            "/api/messages", {"text": f"{MARK} from the web"}, content_type="application/json"
        )
        assert sent.status_code == 202
    end_user = WhatsAppIdentity.objects.get(wa_id=PHONE).end_user
    response_id = end_user.turns.first().response_id
    assert browser.get(f"/api/multichannel/{response_id}").status_code == 200
    say(receive, "otter: keep me", wa_id=OTHER)
    end_user.browser = browser  # type: ignore[attr-defined]
    return end_user


def database_text(our_apps: tuple[str, ...] = OUR_APPS) -> str:
    """Every row of our apps, serialised (the stand-ins' tables left out)."""
    from django.apps import apps

    models = [model for app in our_apps for model in apps.get_app_config(app).get_models()]
    return "\n".join(
        serializers.serialize("json", model._base_manager.all())  # type: ignore[attr-defined]
        for model in models
    )


def erase(who: str, *args: str) -> str:
    out = StringIO()
    call_command("erase_end_user", who, "--reason", "case 42", "--yes", *args, stdout=out)
    return out.getvalue()


def other_user() -> EndUser:
    return WhatsAppIdentity.objects.get(wa_id=OTHER).end_user


def assert_erased(person: EndUser) -> None:
    """The end state of a finished erasure, whatever path led there."""
    assert held_for(person.pk) == NOTHING
    assert held_for(other_user().pk)["responses"] == 1
    text = database_text()
    assert MARK not in text
    assert PHONE not in text
    assert "otter: keep me" in text
    assert OTHER in text
    erasure = Erasure.objects.get(end_user=person)
    assert erasure.finished
    assert AuditEvent.objects.filter(action="erasure").count() == 1
    assert run("verify_audit").startswith("OK")


# --- the whole erasure ------------------------------------------------------------------------


def test_erasure_removes_everything_of_theirs_and_the_ledger_still_verifies(
    person: EndUser, audit_key: Any, public_key_file: str, tmp_path: Path
) -> None:
    before = held_for(person.pk)
    assert before["responses"] >= 3
    assert before["files"] == 1
    assert before["transcriptions"] == 1
    kept = checkpoint(tmp_path / "before.txt")
    old_export = export(tmp_path / "before.jsonl")
    theirs = list(
        AuditEvent.objects.filter(end_user_id=person.pk).values_list("sequence", flat=True)
    )
    call_command("audit_proof", "--end-user", person.pk, "--output", str(tmp_path / "proof.json"))

    out = erase(person.pk)

    assert f"Erasure {Erasure.objects.get().pk} of {person.pk}: finished" in out
    assert "finished" in out
    assert_erased(person)
    person.refresh_from_db()
    assert person.erased_at is not None  # the row stays: the ledger names its id
    # The ledger: every row, digest and hash of theirs stays; the content is gone.
    for event in AuditEvent.objects.filter(sequence__in=theirs):
        assert (event.context, event.body_id) == ({}, None), event.action
    erasure_event = AuditEvent.objects.get(action="erasure")
    context = erasure_event.context
    assert (erasure_event.channel, erasure_event.end_user_id) == ("operator", person.pk)
    assert context["reason"] == "case 42"
    assert context["removed"]["mka1"]["files"]
    assert context["removed"]["mka1"]["transcriptions"]
    assert len(context["removed"]["mka1"]["responses"]) == before["responses"]
    assert context["removed"]["ledger_events"] == len(theirs)
    assert MARK not in json.dumps(context)
    assert PHONE not in json.dumps(context)
    # Each MKA1 call of the erasure is its own audit event, kept (compliance).
    deletes = AuditEvent.objects.filter(action="responses.delete", end_user_id=person.pk)
    assert deletes.count() == before["responses"]
    assert all(event.full_response != "null" for event in deletes)
    # The export: null bodies for theirs, intact ones for everyone else.
    lines = [json.loads(line) for line in export(tmp_path / "after.jsonl").read_text().splitlines()]
    for line in lines:
        if line["end_user_id"] == person.pk and line["action"] in ("responses.create",):
            assert line["full_response"] is None
    assert any(line["end_user_id"] == other_user().pk and line["full_response"] for line in lines)
    integrity = export(tmp_path / "integrity.jsonl", "--with-integrity").read_text()
    erased_lines = [json.loads(line) for line in integrity.splitlines() if "erased_by" in line]
    assert {line["sequence"] for line in erased_lines} == set(theirs)
    assert {line["erased_by"] for line in erased_lines} == {erasure_event.sequence}
    # verify_audit: database, both exports, the checkpoint kept before, proofs.
    key = public_key_file
    assert run("verify_audit", "--checkpoint", str(kept), "--pubkey", key).startswith("OK")
    assert run("verify_audit", "--file", str(tmp_path / "integrity.jsonl")).startswith("OK")
    assert run("verify_audit", "--file", str(old_export)).startswith("OK")
    assert run("verify_audit", "--proof", str(tmp_path / "proof.json"), "--pubkey", key).startswith(
        "OK"
    )
    run("audit_checkpoint")
    call_command("audit_proof", "--end-user", person.pk, "--output", str(tmp_path / "after.json"))
    assert run("verify_audit", "--proof", str(tmp_path / "after.json"), "--pubkey", key).startswith(
        "OK"
    )


def test_the_session_ends_and_the_person_sees_nothing(person: EndUser) -> None:
    browser = person.browser  # type: ignore[attr-defined]
    key = browser.cookies[settings.SESSION_COOKIE_NAME].value
    erase(person.pk)
    assert browser.get("/api/conversation").status_code == 401
    # Gone from the session cache too, not only from the table behind it.
    assert not import_string(f"{settings.SESSION_ENGINE}.SessionStore")().exists(key)


def test_a_returning_number_is_a_new_person_and_a_repeat_request_is_recognised(
    person: EndUser, receive: Callable
) -> None:
    erase(person.pk)
    identity = WhatsAppIdentity.objects.get(end_user=person)
    assert (identity.wa_id, identity.bsuid, identity.erased_hash) == (
        None,
        None,
        erased_id_hash(PHONE),
    )
    repeat = erase(f"+{PHONE}")
    assert repeat.startswith(f"Erasure {Erasure.objects.get().pk} of {person.pk}: finished")
    say(receive, "hello again")
    newcomer = WhatsAppIdentity.objects.get(wa_id=PHONE).end_user
    assert newcomer.pk != person.pk
    assert UserMessage.objects.get(end_user=newcomer).turn is not None  # answered, afresh


def test_running_it_twice_is_harmless(person: EndUser) -> None:
    erase(person.pk)
    events = AuditEvent.objects.count()
    again = erase(person.pk)
    assert again.startswith(f"Erasure {Erasure.objects.get().pk} of {person.pk}: finished")
    assert AuditEvent.objects.count() == events
    assert_erased(person)


# --- crashes and failures ------------------------------------------------------------------


STEPS = [step for step in Erasure.Step if step not in (Erasure.Step.BEGIN, Erasure.Step.DONE)]


class Crash(Exception):
    """The process died here."""


@pytest.mark.parametrize("step", STEPS, ids=[step.value for step in STEPS])
def test_a_crash_at_any_step_resumes_to_the_same_end_state(
    person: EndUser, step: Erasure.Step, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = privacy._STEPS[step]

    def crash_halfway(erasure: Erasure) -> None:
        # Some of the step's work is done (and saved) when the process dies.
        monkeypatch.setattr(privacy, "_progress", _crash_after(privacy._progress))
        monkeypatch.setattr(privacy, "_count", _crash_after(privacy._count))
        try:
            real(erasure)
        finally:
            monkeypatch.undo()
        raise Crash(step)

    monkeypatch.setitem(privacy._STEPS, step, crash_halfway)
    with pytest.raises(Crash):
        erase(person.pk)
    monkeypatch.undo()
    erasure = Erasure.objects.get(end_user=person)
    assert (erasure.step, erasure.finished) == (step, False)
    out = erase(person.pk)
    assert out.startswith(f"Resuming erasure {erasure.pk} of {person.pk} at ")
    assert_erased(person)


def _crash_after(save: Callable[..., None]) -> Callable[..., None]:
    def saved_then_crash(*args: Any) -> None:
        save(*args)
        raise Crash("mid-step")

    return saved_then_crash


def test_failing_mka1_calls_are_audited_retried_and_reported(person: EndUser) -> None:
    fault_inject("responses.delete", status=500, times=20)
    error = failure("erase_end_user", person.pk, "--reason", "case 42", "--yes")
    assert "stopped at deleting stored responses at mka1" in str(error)
    assert "Run the command again to continue" in str(error)
    erasure = Erasure.objects.get(end_user=person)
    assert (erasure.attempts, erasure.step) == (1, "mka1_responses")
    failed = AuditEvent.objects.filter(action="responses.delete.failed").get()
    assert failed.context["status"] == 500
    assert failed.context["erasure"] == erasure.pk
    from multichannel.sandbox.faults import faults_clear

    faults_clear()
    erase(person.pk)
    assert_erased(person)


def test_objects_already_gone_at_mka1_count_as_deleted(person: EndUser) -> None:
    fault_inject("files.delete", status=404)
    erase(person.pk)
    gone = AuditEvent.objects.get(action="files.delete")
    assert gone.context["already_gone"] is True
    assert held_for(person.pk)["responses"] == 0


# --- legal hold ------------------------------------------------------------------------------


def test_erasure_under_a_legal_hold_is_refused_and_says_so(person: EndUser) -> None:
    call_command(
        "legal_hold", "add", person.pk, "--reason", "litigation 7", "--by", "dpo", stdout=StringIO()
    )
    error = failure("erase_end_user", person.pk, "--reason", "case 42", "--yes")
    assert "under a legal hold" in str(error)
    assert "litigation 7" in str(error)
    assert not Erasure.objects.exists()
    assert MARK in database_text()
    assert held_for(person.pk)["responses"] >= 3
    hold = AuditEvent.objects.get(action="legal_hold.add")
    assert (hold.end_user_id, hold.context["reason"]) == (person.pk, "litigation 7")
    out = StringIO()
    call_command("legal_hold", "list", stdout=out)
    assert person.pk in out.getvalue()
    call_command("legal_hold", "remove", person.pk, "--reason", "settled", stdout=StringIO())
    assert AuditEvent.objects.filter(action="legal_hold.remove").count() == 1
    erase(person.pk)
    assert_erased(person)


def test_a_hold_placed_mid_erasure_pauses_it(
    person: EndUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = privacy._STEPS[Erasure.Step.MKA1_FILES]

    def hold_then_run(erasure: Erasure) -> None:
        real(erasure)
        LegalHold.objects.create(end_user=person, reason="court order", added_by="dpo")

    monkeypatch.setitem(privacy._STEPS, Erasure.Step.MKA1_FILES, hold_then_run)
    assert "under a legal hold" in str(
        failure("erase_end_user", person.pk, "--reason", "case 42", "--yes")
    )
    assert Erasure.objects.get().step == Erasure.Step.MKA1_TRANSCRIPTIONS
    assert MARK in database_text()  # paused before our rows


def test_legal_hold_needs_a_reason_and_a_known_person(person: EndUser) -> None:
    assert "required" in str(failure("legal_hold", "add", person.pk))
    assert "no end user user_nobody" in str(
        failure("legal_hold", "add", "user_nobody", "--reason", "x")
    )
    assert "not under a legal hold" in str(
        failure("legal_hold", "remove", person.pk, "--reason", "x")
    )


# --- asked for on WhatsApp ------------------------------------------------------------------


def test_delete_my_data_then_yes_erases_and_the_confirmation_is_the_last_message(
    person: EndUser, receive: Callable, mka1_calls: list
) -> None:
    sent_before = len(sent_texts())
    say(receive, "delete my data")
    prompt = sent_texts(PHONE)[-1]
    assert "Reply YES within 10 minutes" in prompt
    assert held_for(person.pk)["responses"] >= 3  # nothing yet
    say(receive, "YES")
    assert_erased(person)
    erasure = Erasure.objects.get()
    assert (erasure.requested_by, erasure.notify_channel) == ("the person, on WhatsApp", "whatsapp")
    after_prompt = sent_texts()[sent_before + 1 :]
    assert after_prompt == [
        "Done: your data has been deleted. This is the last message you will get from us; "
        "if you write again, we start afresh."
    ]


def test_yes_long_after_the_request_is_an_ordinary_message(
    person: EndUser, receive: Callable
) -> None:
    say(receive, "DELETE MY DATA")
    late = wa.message_event(wa_id=PHONE, text="yes", timestamp=int(9e9))
    receive(late)
    assert not Erasure.objects.exists()
    assert sent_texts(PHONE)[-1] == "You said: yes"


def test_yes_without_a_request_is_an_ordinary_message(person: EndUser, receive: Callable) -> None:
    say(receive, "YES")
    assert not Erasure.objects.exists()
    assert sent_texts(PHONE)[-1] == "You said: YES"


def test_yes_under_a_legal_hold_is_told_why_nothing_happens(
    person: EndUser, receive: Callable
) -> None:
    LegalHold.objects.create(end_user=person, reason="litigation", added_by="dpo")
    say(receive, "DELETE MY DATA")
    say(receive, "YES")
    assert not Erasure.objects.exists()
    assert sent_texts(PHONE)[-1].startswith("We can't delete your data right now")


# --- who may erase ---------------------------------------------------------------------------


def staff(name: str, group: str) -> Client:
    user = get_user_model().objects.create_user(name, password="a-long-passphrase-1")
    user.is_staff = True
    user.save()
    user.groups.add(Group.objects.get(name=group))
    browser = Client()
    browser.force_login(user)
    return browser


def test_auditors_cannot_erase_and_data_protection_can(
    person: EndUser, django_capture_on_commit_callbacks: Any
) -> None:
    changelist = "/admin/multichannel/enduser/"
    form = {"action": "erase", "_selected_action": [person.pk], "confirmed": "yes", "reason": "x"}
    auditor = staff("audrey", "Auditors")
    assert b"Erase these people" not in auditor.get(changelist).content
    with django_capture_on_commit_callbacks(execute=True):
        auditor.post(changelist, form)
    assert not Erasure.objects.exists()
    assert auditor.get("/admin/multichannel/legalhold/").status_code == 200  # may look
    officer = staff("dora", "Data protection")
    page = officer.get(changelist)
    assert b"Erase these people" in page.content
    confirm = officer.post(changelist, {"action": "erase", "_selected_action": [person.pk]})
    assert b"case or ticket reference" in confirm.content  # asks why first
    assert not Erasure.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        officer.post(changelist, {**form, "reason": "ticket 9"})
    erasure = Erasure.objects.get()
    assert (erasure.reason, erasure.requested_by) == ("ticket 9", "dora (admin)")
    assert_erased(person)


def test_create_data_protection_officer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPO_PASSWORD", "correct-horse-battery-staple")
    out = StringIO()
    call_command("create_data_protection_officer", "dora", "--no-input", stdout=out)
    assert out.getvalue().startswith("Created data protection officer dora")
    dora = get_user_model().objects.get(username="dora")
    assert dora.has_perm("multichannel.erase_enduser")
    assert not dora.has_perm("audit.change_auditevent")


def test_an_unknown_person_is_a_clear_error() -> None:
    assert "no end user user_nobody" in str(failure("erase_end_user", "user_nobody"))
    assert "nor was one erased" in str(failure("erase_end_user", "+15550000000"))


def test_a_reason_is_required(person: EndUser) -> None:
    with pytest.raises(CommandError, match="--reason is required"):
        call_command("erase_end_user", person.pk, "--yes", stdout=StringIO())


# --- retention ------------------------------------------------------------------------------

HELD = "15550001111"


def backdate(end_user: EndUser, moment: Any) -> None:
    """Everything of this person in our rows happened at `moment`."""
    UserMessage.objects.filter(end_user=end_user).update(sent_at=moment)
    Turn.objects.filter(end_user=end_user).update(created_at=moment)
    inbound = InboundMessage.objects.filter(user_message__end_user=end_user)
    WebhookDelivery.objects.filter(messages__in=inbound).update(received_at=moment)
    inbound.update(sent_at=moment)
    OutboundMessage.objects.filter(user_message__end_user=end_user).update(created_at=moment)


def test_retention_removes_only_what_is_old_enough_and_not_held(
    receive: Callable, tmp_path: Path
) -> None:
    say(receive, f"{MARK} long ago")
    say(receive, "walrus long ago, under a hold", wa_id=HELD)
    say(receive, "otter: just now", wa_id=OTHER)
    old, held = (WhatsAppIdentity.objects.get(wa_id=n).end_user for n in (PHONE, HELD))
    long_ago = timezone.now() - timedelta(days=300)
    backdate(old, long_ago)
    backdate(held, long_ago)
    # The ledger's old events (its timestamps are written once, at record time).
    (old_event,) = record(
        end_user_id=old.pk, timestamp=long_ago, full_response={"output_text": f"{MARK} old"}
    )
    (held_event,) = record(
        end_user_id=held.pk, timestamp=long_ago, full_response={"output_text": "walrus old"}
    )
    young_of_old = list(AuditEvent.objects.filter(end_user_id=old.pk, timestamp__gt=long_ago))
    assert young_of_old
    privacy.legal_hold_add(end_user=held, reason="litigation 7", by="dora")

    out = run("apply_retention", "--days", "200")

    retention = AuditEvent.objects.get(action="retention")
    assert f"(audit event {retention.sequence})" in out
    assert retention.context["days"] == 200
    assert retention.context["held_end_users"] == 1
    assert retention.context["ledger_events"] == 1
    # Old and not held: gone from our rows and from the ledger event that is old enough.
    # (The ledger's events of today keep their content: the ledger is checked below.)
    text = database_text(tuple(app for app in OUR_APPS if app != "audit"))
    assert MARK not in text
    assert PHONE in text  # the person is not erased, only their old content
    assert "walrus long ago, under a hold" in text
    assert "otter: just now" in text
    old_event.refresh_from_db()
    assert (old_event.context, old_event.body_id) == ({}, None)
    held_event.refresh_from_db()
    assert held_event.body_id is not None
    for event in young_of_old:
        event.refresh_from_db()
        assert event.context or event.body_id, event.action
    # Everything still verifies; the export says which event removed the content.
    assert run("verify_audit").startswith("OK")
    integrity = export(tmp_path / "integrity.jsonl", "--with-integrity").read_text()
    erased = [json.loads(line) for line in integrity.splitlines() if "erased_by" in line]
    assert [(line["sequence"], line["erased_by"]) for line in erased] == [
        (old_event.sequence, retention.sequence)
    ]
    assert erased[0]["full_response"] is None
    assert run("verify_audit", "--file", str(tmp_path / "integrity.jsonl")).startswith("OK")
    # A second run finds nothing more to remove, and says so in its own event.
    run("apply_retention", "--days", "200")
    assert AuditEvent.objects.filter(action="retention").last().context["ledger_events"] == 0


def test_retention_never_goes_below_the_minimum(settings: Any) -> None:
    assert "at least MIN_RETENTION_DAYS (183 days)" in str(
        failure("apply_retention", "--days", "30")
    )
    assert "CONTENT_RETENTION_DAYS is not set" in str(failure("apply_retention"))
    assert not AuditEvent.objects.filter(action="retention").exists()
    settings.CONTENT_RETENTION_DAYS = 30
    assert "multichannel.E015" in {message.id for message in checks.run_checks()}
    settings.CONTENT_RETENTION_DAYS = 183
    assert "multichannel.E015" not in {message.id for message in checks.run_checks()}
