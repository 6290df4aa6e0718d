"""Signing in on the web as the same end user, through a one-time WhatsApp link."""

import hashlib
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from multichannel.models import EndUser, UserMessage
from multichannel.sandbox.models import SandboxGraphMessage
from tests.support.outgoing import Calls, sent_texts
from web.models import SignInLink
from web.services import LOGIN
from whatsapp.models import OutboundMessage

pytestmark = pytest.mark.django_db

LINK_RE = re.compile(r"http://testserver/signin/(?P<token>[A-Za-z0-9_-]+)")


@pytest.fixture(autouse=True)
def site_url(settings) -> None:
    settings.SITE_URL = "http://testserver"


def ask_for_link(whatsapp_says, text: str = "LOGIN", wa_id: str = "15551234567") -> str:
    message = whatsapp_says(text, wa_id=wa_id)
    assert message.kind == LOGIN
    match = LINK_RE.search(sent_texts(wa_id)[-1])
    assert match, sent_texts(wa_id)
    return match["token"]


def sign_in(client: Client, token: str):
    return client.post(f"/signin/{token}")


@pytest.mark.parametrize("keyword", ["LOGIN", "login", "  Login "])
def test_login_keyword_replies_with_a_link_and_never_reaches_mka1(
    whatsapp_says, mka1_calls: Calls, keyword: str
) -> None:
    ask_for_link(whatsapp_says, keyword)
    assert mka1_calls == []


def test_the_token_is_stored_only_as_a_hash(whatsapp_says) -> None:
    token = ask_for_link(whatsapp_says)
    link = SignInLink.objects.get()
    assert link.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in UserMessage.objects.get().reply_text
    assert token not in OutboundMessage.objects.get().text
    assert "[one-time sign-in link]" in OutboundMessage.objects.get().text
    for event in AuditEvent.objects.all():
        assert token not in str(event.context) + event.full_response


def test_opening_the_link_asks_before_using_it(client: Client, whatsapp_says) -> None:
    token = ask_for_link(whatsapp_says)
    page = client.get(f"/signin/{token}", follow=True)
    assert page.status_code == 200
    assert b"Continue" in page.content
    assert SignInLink.objects.get().used_at is None  # a link preview does not use it up


def test_the_link_signs_in_the_same_end_user_once(client: Client, whatsapp_says) -> None:
    token = ask_for_link(whatsapp_says)
    whatsapp_user = EndUser.objects.get()
    answer = sign_in(client, token)
    assert answer.status_code == 302
    assert client.session["end_user_id"] == whatsapp_user.pk
    home = client.get("/")
    assert whatsapp_user.pk.encode() in home.content
    assert sign_in(Client(), token).status_code == 410  # used up


def test_an_expired_link_is_refused(client: Client, whatsapp_says) -> None:
    token = ask_for_link(whatsapp_says)
    SignInLink.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert sign_in(client, token).status_code == 410
    assert "end_user_id" not in client.session


def test_a_tampered_link_is_refused(client: Client, whatsapp_says) -> None:
    token = ask_for_link(whatsapp_says)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert sign_in(client, tampered).status_code == 410
    assert sign_in(client, "x").status_code == 410
    assert SignInLink.objects.get().used_at is None


def test_a_link_signs_in_only_the_user_who_asked(whatsapp_says) -> None:
    alice_token = ask_for_link(whatsapp_says, wa_id="15550000001")
    bob_token = ask_for_link(whatsapp_says, wa_id="15550000002")
    alice = EndUser.objects.get(whatsapp_identity__wa_id="15550000001")
    bob = EndUser.objects.get(whatsapp_identity__wa_id="15550000002")
    alice_browser, bob_browser = Client(), Client()
    sign_in(alice_browser, alice_token)
    sign_in(bob_browser, bob_token)
    assert alice_browser.session["end_user_id"] == alice.pk
    assert bob_browser.session["end_user_id"] == bob.pk


def test_a_second_login_soon_after_gets_no_new_link(whatsapp_says) -> None:
    first = ask_for_link(whatsapp_says)
    whatsapp_says("LOGIN")
    assert sent_texts()[-1].startswith("A sign-in link was sent a moment ago")
    assert SignInLink.objects.count() == 1
    assert sign_in(Client(), first).status_code == 302  # the link the user holds still works


def test_a_new_link_later_revokes_the_unused_earlier_one(whatsapp_says, settings) -> None:
    first = ask_for_link(whatsapp_says)
    SignInLink.objects.update(created_at=timezone.now() - timedelta(minutes=3))
    second = ask_for_link(whatsapp_says)
    assert first != second
    assert sign_in(Client(), first).status_code == 410  # at most one live link per person
    assert sign_in(Client(), second).status_code == 302


def test_ten_logins_in_a_row_leave_one_redeemable_link(whatsapp_says) -> None:
    first = ask_for_link(whatsapp_says)
    for _ in range(9):
        whatsapp_says("LOGIN")
    assert SignInLink.objects.count() == 1
    assert len(LINK_RE.findall(" ".join(sent_texts()))) == 1
    assert sign_in(Client(), first).status_code == 302


def test_issuing_and_using_a_link_are_audit_events(client: Client, whatsapp_says) -> None:
    token = ask_for_link(whatsapp_says)
    sign_in(client, token)
    end_user = EndUser.objects.get()
    issued = AuditEvent.objects.get(action="signin.link_issued")
    used = AuditEvent.objects.get(action="signin.link_used")
    assert (issued.channel, issued.end_user_id) == ("whatsapp", end_user.pk)
    assert (used.channel, used.end_user_id) == ("webapp", end_user.pk)
    assert issued.context["link_id"] == used.context["link_id"]


def test_sign_out_ends_the_session(client: Client, whatsapp_says) -> None:
    sign_in(client, ask_for_link(whatsapp_says))
    assert client.get("/api/conversation").status_code == 200
    assert client.post("/signout").status_code == 302
    assert client.get("/api/conversation").status_code == 401


def test_sign_in_replaces_a_staff_session_and_never_grants_admin(
    client: Client, whatsapp_says
) -> None:
    staff = get_user_model().objects.create_superuser("root", "root@example.test", "pw-x-123!")
    client.force_login(staff)
    assert client.get("/admin/").status_code == 200
    sign_in(client, ask_for_link(whatsapp_says))
    admin = client.get("/admin/")
    assert admin.status_code == 302
    assert "/admin/login/" in admin["Location"]


def test_sign_in_post_needs_the_csrf_token(whatsapp_says) -> None:
    token = ask_for_link(whatsapp_says)
    strict = Client(enforce_csrf_checks=True)
    assert strict.post(f"/signin/{token}").status_code == 403
    assert SignInLink.objects.get().used_at is None


def test_the_signed_out_page_explains_how_to_sign_in(client: Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert b"LOGIN" in page.content
    assert b"WhatsApp" in page.content


def test_a_failed_link_send_is_retried_with_a_fresh_link(whatsapp_says) -> None:
    from multichannel.sandbox.faults import fault_inject
    from multichannel.tasks import recover_unfinished

    fault_inject("graph.messages", status=503, times=8)  # mark-read, send, their retries
    message = whatsapp_says("LOGIN")
    message.refresh_from_db()
    assert message.state == UserMessage.State.ANSWERED
    UserMessage.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    recover_unfinished.call_local()
    token = LINK_RE.search(
        SandboxGraphMessage.objects.filter(kind="text").last().body["text"]["body"]
    )
    assert token
    assert sign_in(Client(), token["token"]).status_code == 302
    # Links from failed attempts were never delivered and no longer work.
    assert (
        SignInLink.objects.filter(used_at__isnull=True, expires_at__gt=timezone.now()).count() == 0
    )


# --- the token never leaves the link; the page says whose account it is -----------------------


def test_opening_the_link_moves_the_token_out_of_the_address(client: Client, whatsapp_says) -> None:
    token = ask_for_link(whatsapp_says)
    opened = client.get(f"/signin/{token}")
    assert opened.status_code == 302
    assert opened["Location"] == "/signin"
    assert opened["Referrer-Policy"] == "no-referrer"
    cookie = opened.cookies["signin_token"]
    assert (cookie.value, cookie["path"], bool(cookie["httponly"])) == (token, "/signin", True)
    page = client.get("/signin")
    assert page.status_code == 200
    assert token.encode() not in page.content  # nothing on the page (or its requests) has it
    assert client.post("/signin").status_code == 302  # the button uses the cookie
    assert client.session["end_user_id"] == EndUser.objects.get().pk
    assert SignInLink.objects.get().used_at is not None


def test_head_is_answered_like_get_and_uses_nothing_up(client: Client, whatsapp_says) -> None:
    token = ask_for_link(whatsapp_says)
    assert client.head(f"/signin/{token}").status_code == 302
    assert client.head("/signin").status_code == 200
    assert SignInLink.objects.get().used_at is None


def test_the_confirmation_page_shows_the_masked_number_it_signs_in_as(
    client: Client, whatsapp_says
) -> None:
    token = ask_for_link(whatsapp_says, wa_id="15557654321")
    page = client.get(f"/signin/{token}", follow=True)
    assert "WhatsApp +15•••••4321" in page.content.decode()
    assert "7654321" not in page.content.decode()  # never the whole number
    client.post("/signin")
    home = client.get("/").content.decode()
    assert "Signed in as WhatsApp +15•••••4321" in home


def test_a_forwarded_link_tells_the_person_whose_account_it_is(whatsapp_says) -> None:
    token = ask_for_link(whatsapp_says, wa_id="15550001111")
    victim = Client()
    page = victim.get(f"/signin/{token}", follow=True).content.decode()
    assert "+15•••••1111" in page
    assert "Not your number?" in page


def test_a_used_or_unknown_token_shows_the_failed_page_not_a_name(client: Client) -> None:
    client.cookies["signin_token"] = "not-a-real-token"
    page = client.get("/signin")
    assert page.status_code == 410
    assert b"WhatsApp +" not in page.content


def test_signing_in_to_the_admin_drops_the_end_user_session(client: Client, whatsapp_says) -> None:
    sign_in(client, ask_for_link(whatsapp_says))
    assert client.get("/api/conversation").status_code == 200
    get_user_model().objects.create_superuser("root", "root@example.test", "pw-x-123!long")
    login = client.post(
        "/admin/login/?next=/admin/", {"username": "root", "password": "pw-x-123!long"}
    )
    assert login.status_code == 302
    assert client.get("/admin/").status_code == 200
    assert "end_user_id" not in client.session
    assert client.get("/api/conversation").status_code == 401
