"""The auditor's side: view-only admin, JSONL download, evidence report, auditor accounts."""

import html
import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from audit.models import AuditEvent
from audit.services import audit_event_record
from multichannel.models import UserMessage

pytestmark = pytest.mark.django_db

User = get_user_model()


@pytest.fixture
def auditor() -> Client:
    user = User.objects.create_user("alice", password="a-long-test-password-1")
    user.is_staff = True
    user.save()
    user.groups.add(Group.objects.get(name="Auditors"))
    browser = Client()
    browser.force_login(user)
    return browser


@pytest.fixture
def superuser() -> Client:
    browser = Client()
    browser.force_login(User.objects.create_superuser("root", "r@example.test", "x-Long-pw-123"))
    return browser


@pytest.fixture
def two_channel(whatsapp_says, web_client) -> UserMessage:
    """The seed scenario: a WhatsApp create, then the web retrieval of that response."""
    message = whatsapp_says("Hello from WhatsApp")
    message.refresh_from_db()
    answer = web_client(message.end_user).get(f"/api/multichannel/{message.turn.response_id}")
    assert answer.status_code == 200
    return message


def export_output(*args: str) -> str:
    out = StringIO()
    call_command("export_audit", *args, stdout=out)
    return out.getvalue()


def evidence(*args: str) -> str:
    out = StringIO()
    call_command("audit_evidence", *args, stdout=out)
    return out.getvalue()


# --- permissions ---------------------------------------------------------------------------


ADMIN_PAGES = [
    "/admin/audit/auditevent/",
    "/admin/multichannel/enduser/",
    "/admin/multichannel/conversation/",
    "/admin/multichannel/turn/",
    "/admin/multichannel/usermessage/",
    "/admin/whatsapp/whatsappidentity/",
    "/admin/whatsapp/inboundmessage/",
    "/admin/whatsapp/outboundmessage/",
    "/admin/whatsapp/webhookdelivery/",
]


@pytest.mark.parametrize("page", ADMIN_PAGES)
def test_an_auditor_can_browse_every_table(auditor: Client, two_channel, page: str) -> None:
    assert auditor.get(page).status_code == 200


def test_an_auditor_sees_an_event_but_cannot_change_it(auditor: Client, two_channel) -> None:
    event = AuditEvent.objects.get(action="responses.create")
    page = auditor.get(f"/admin/audit/auditevent/{event.pk}/change/")
    assert page.status_code == 200
    assert b"Save" not in page.content
    assert (
        auditor.post(f"/admin/audit/auditevent/{event.pk}/change/", {"channel": "x"}).status_code
        == 403
    )
    assert AuditEvent.objects.get(pk=event.pk).channel == "whatsapp"


@pytest.mark.parametrize("who", ["auditor", "superuser"])
def test_nobody_can_add_change_or_delete_audit_events(request, two_channel, who: str) -> None:
    browser: Client = request.getfixturevalue(who)
    event = AuditEvent.objects.first()
    assert browser.get("/admin/audit/auditevent/add/").status_code == 403
    assert browser.post(f"/admin/audit/auditevent/{event.pk}/delete/").status_code == 403
    answer = browser.post(
        "/admin/audit/auditevent/",
        {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"},
    )
    assert answer.status_code in (200, 302)
    assert AuditEvent.objects.filter(pk=event.pk).exists()
    page = browser.get("/admin/audit/auditevent/")
    assert b"delete_selected" not in page.content


def test_an_auditor_cannot_change_mappings_either(auditor: Client, two_channel) -> None:
    message = UserMessage.objects.first()
    assert auditor.get("/admin/multichannel/usermessage/add/").status_code == 403
    assert auditor.post(f"/admin/multichannel/usermessage/{message.pk}/delete/").status_code == 403


def test_an_end_user_session_cannot_reach_the_admin(two_channel, web_client) -> None:
    browser = web_client(two_channel.end_user)
    answer = browser.get("/admin/audit/auditevent/")
    assert answer.status_code == 302
    assert "/admin/login/" in answer["Location"]


# --- browsing ---------------------------------------------------------------------------------


def test_the_event_page_shows_formatted_json_and_related_links(
    auditor: Client, two_channel
) -> None:
    event = AuditEvent.objects.get(action="responses.create")
    page = html.unescape(
        auditor.get(f"/admin/audit/auditevent/{event.pk}/change/").content.decode()
    )
    assert '"output_text": "You said: Hello from WhatsApp"' in page  # indented JSON
    assert f"?response_id={event.response_id}" in page
    assert f"?conversation_id={event.conversation_id}" in page


def test_following_a_response_shows_both_channels(auditor: Client, two_channel) -> None:
    response_id = two_channel.turn.response_id
    page = auditor.get(f"/admin/audit/auditevent/?response_id={response_id}").content.decode()
    assert "responses.create" in page
    assert "responses.get" in page


def test_search_finds_events_by_any_id(auditor: Client, two_channel) -> None:
    event = AuditEvent.objects.get(action="responses.get")
    for value in (event.response_id, event.conversation_id, event.end_user_id):
        page = auditor.get("/admin/audit/auditevent/", {"q": str(value)})
        assert f"/admin/audit/auditevent/{event.pk}/change/".encode() in page.content


# --- downloads -------------------------------------------------------------------------------


def _download(browser: Client, url: str, data: dict | None = None) -> bytes:
    answer = browser.post(url, data) if data else browser.get(url)
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("application/x-ndjson")
    return b"".join(answer.streaming_content)  # type: ignore[attr-defined]


def test_the_jsonl_download_equals_export_audit(auditor: Client, two_channel) -> None:
    assert _download(auditor, "/admin/audit/auditevent/export/") == export_output().encode()


def test_the_filtered_download_equals_the_filtered_export(auditor: Client, two_channel) -> None:
    downloaded = _download(auditor, "/admin/audit/auditevent/export/?channel__exact=webapp")
    assert downloaded == export_output("--channel", "webapp").encode()
    assert downloaded.count(b"\n") == 1


def test_the_download_action_exports_the_selected_events(auditor: Client, two_channel) -> None:
    chosen = list(
        AuditEvent.objects.filter(action__startswith="responses.").values_list("pk", flat=True)
    )
    downloaded = _download(
        auditor,
        "/admin/audit/auditevent/",
        {"action": "download_selected_jsonl", "_selected_action": chosen},
    )
    lines = [json.loads(line) for line in downloaded.decode().splitlines()]
    assert [line["action"] for line in lines] == ["responses.create", "responses.get"]


# --- evidence -------------------------------------------------------------------------------


def test_the_evidence_report_passes_for_a_real_two_channel_flow(two_channel) -> None:
    report = evidence()
    response_id = two_channel.turn.response_id
    assert f"Response {response_id}: PASS" in report
    for label in ("same API key", "same end user id", "same response id", "same conversation id"):
        assert f"PASS  {label}" in report
    assert f"Timeline of {two_channel.end_user_id}" in report
    assert "Summary: 1 pair(s) checked, 1 passed, 0 failed" in report


def test_the_evidence_report_as_json(two_channel) -> None:
    data = json.loads(evidence("--format", "json", "--response-id", two_channel.turn.response_id))
    (pair,) = data["pairs"]
    assert pair["result"] == "PASS"
    assert set(pair["conditions"].values()) == {"PASS"}
    assert (pair["created"]["channel"], pair["retrieved"]["channel"]) == ("whatsapp", "webapp")
    assert data["summary"] == {"checked": 1, "passed": 1, "failed": 0}
    actions = [event["action"] for event in data["timeline"][two_channel.end_user_id]]
    assert actions[:2] == ["conversations.create", "responses.create"]


@pytest.mark.parametrize(
    ("field", "value", "failing"),
    [
        ("end_user_id", "user_someone_else", "same end user id"),
        ("api_key_fingerprint", "sha256:ffffffffffffffff", "same API key"),
        ("conversation_id", "conv_other", "same conversation id"),
    ],
)
def test_the_evidence_report_fails_when_a_condition_differs(
    two_channel, field: str, value: str, failing: str
) -> None:
    create = AuditEvent.objects.get(action="responses.create")
    forged = {
        "channel": "webapp",
        "action": "responses.get",
        "end_user_id": create.end_user_id,
        "response_id": create.response_id,
        "conversation_id": create.conversation_id,
        "full_response": json.loads(create.full_response),
        "api_key_fingerprint": create.api_key_fingerprint,
    }
    forged[field] = value
    AuditEvent.objects.filter(action="responses.get")  # the real retrieval stays and passes
    audit_event_record(**forged)
    out = StringIO()
    with pytest.raises(CommandError, match="1 of 2 pair"):
        call_command("audit_evidence", stdout=out)
    assert f"FAIL  {failing}" in out.getvalue()


def test_no_cross_channel_pair_is_a_failure(whatsapp_says) -> None:
    whatsapp_says("only one channel")
    with pytest.raises(CommandError, match="no response created on one channel"):
        evidence()
    with pytest.raises(CommandError, match="for resp_unknown"):
        evidence("--response-id", "resp_unknown")


def test_the_admin_evidence_page_shows_the_pair(auditor: Client, two_channel) -> None:
    page = auditor.get("/admin/audit/auditevent/evidence/").content.decode()
    assert f"Response {two_channel.turn.response_id} — PASS" in page
    assert "1 pair(s), 0 failed" in page
    assert page.count("PASS — ") == 4


# --- auditor accounts -------------------------------------------------------------------------


def test_create_auditor_takes_the_password_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("AUDITOR_PASSWORD", "correct-horse-battery-staple")
    out = StringIO()
    call_command("create_auditor", "carol", "--no-input", stdout=out)
    assert out.getvalue() == "Created auditor carol (view-only, group Auditors).\n"
    carol = User.objects.get(username="carol")
    assert carol.is_staff
    assert not carol.is_superuser
    assert carol.check_password("correct-horse-battery-staple")
    assert list(carol.groups.values_list("name", flat=True)) == ["Auditors"]
    monkeypatch.setenv("AUDITOR_PASSWORD", "another-long-passphrase-9")
    out = StringIO()
    call_command("create_auditor", "carol", "--no-input", stdout=out)
    assert out.getvalue().startswith("Updated auditor carol")


def test_create_auditor_prompts_twice(monkeypatch) -> None:
    answers = iter(["a-prompted-passphrase-1", "a-prompted-passphrase-1"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    call_command("create_auditor", "dave", stdout=StringIO())
    assert User.objects.get(username="dave").check_password("a-prompted-passphrase-1")


@pytest.mark.parametrize(
    ("env", "message"),
    [({}, "AUDITOR_PASSWORD"), ({"AUDITOR_PASSWORD": "short"}, "too short")],
)
def test_create_auditor_refuses_bad_passwords(monkeypatch, env: dict, message: str) -> None:
    monkeypatch.delenv("AUDITOR_PASSWORD", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(CommandError, match=message):
        call_command("create_auditor", "erin", "--no-input", stdout=StringIO())
    assert not User.objects.filter(username="erin").exists()


def test_create_auditor_will_not_demote_a_superuser(monkeypatch) -> None:
    User.objects.create_superuser("root", "r@example.test", "x-Long-pw-123")
    monkeypatch.setenv("AUDITOR_PASSWORD", "correct-horse-battery-staple")
    with pytest.raises(CommandError, match="superuser"):
        call_command("create_auditor", "root", "--no-input", stdout=StringIO())


def test_create_auditor_has_no_password_argument() -> None:
    with pytest.raises(CommandError):
        call_command("create_auditor", "frank", "--password", "secret")


# --- hardening: bad filters, login lockout, content security policy ----------------------------


@pytest.mark.parametrize(
    "query",
    ["sequence=abc", "timestamp__gte=not-a-date", "no_such_field=1", "sequence__in=1,x"],
)
def test_a_bad_filter_on_the_download_is_a_400_not_a_crash(
    auditor: Client, two_channel, query: str
) -> None:
    answer = auditor.get(f"/admin/audit/auditevent/export/?{query}")
    assert answer.status_code == 400
    assert answer["Content-Type"].startswith("text/plain")


def test_repeated_failed_admin_logins_lock_the_account_out(settings) -> None:
    settings.AXES_FAILURE_LIMIT = 3
    User.objects.create_user("bob", password="the-right-password-1", is_staff=True)
    browser = Client()
    for _ in range(3):
        answer = browser.post("/admin/login/", {"username": "bob", "password": "wrong"})
        assert answer.status_code in (200, 429)
    locked = browser.post("/admin/login/", {"username": "bob", "password": "the-right-password-1"})
    assert locked.status_code == 429  # even the right password, until the cool-off ends
    assert "_auth_user_id" not in browser.session


@pytest.mark.parametrize("path", ["/", "/admin/login/", "/signin", "/api/schema", "/healthz"])
def test_every_page_has_a_content_security_policy(client: Client, path: str) -> None:
    policy = client.get(path)["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy


def test_the_admin_pages_need_no_inline_style_or_script(auditor: Client, two_channel) -> None:
    event = AuditEvent.objects.first()
    pages = [
        "/admin/audit/auditevent/",
        f"/admin/audit/auditevent/{event.pk}/change/",
        "/admin/audit/auditevent/evidence/",
    ]
    for page in pages:
        content = auditor.get(page).content.decode()
        assert " style=" not in content, page
        assert "<script>" not in content, page
