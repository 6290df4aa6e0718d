"""The web channel's API: the seed's retrieval endpoint, the thread, continuing on the web."""

import pytest
import requests
from django.core.cache import cache
from django.test import Client

from audit.models import AuditEvent
from multichannel.limits import seconds_left_in_window
from multichannel.models import EndUser, Turn, UserMessage
from multichannel.sandbox.faults import fault_inject
from multichannel.sandbox.transport import InProcessAdapter
from tests.support.outgoing import Calls, response_creates
from tests.support.threads import at_once
from tests.support.webhooks import webhook_post

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_throttles() -> None:
    cache.clear()


@pytest.fixture
def answered(whatsapp_says) -> UserMessage:
    """A WhatsApp text that MKA1 answered, as the seed guide's channel one."""
    message = whatsapp_says("What is the capital of France?")
    message.refresh_from_db()
    assert message.turn is not None
    return message


def gets(calls: Calls) -> list[str]:
    return [path for method, path, _ in calls if method == "GET"]


# --- GET /api/multichannel/<response_id> -------------------------------------------------


def test_retrieval_returns_the_seed_contract_and_audits_it(
    answered: UserMessage, web_client, mka1_calls: Calls
) -> None:
    browser = web_client(answered.end_user)
    response_id = answered.turn.response_id
    answer = browser.get(f"/api/multichannel/{response_id}")
    assert answer.status_code == 200
    body = answer.json()
    assert list(body) == ["response_id", "conversation_id", "response"]
    assert body["response_id"] == response_id
    create = AuditEvent.objects.get(action="responses.create")
    assert body["conversation_id"] == create.conversation_id
    assert body["response"]["output_text"] == "You said: What is the capital of France?"
    assert gets(mka1_calls) == [f"/responses/{response_id}"]

    retrieval = AuditEvent.objects.get(action="responses.get")
    assert retrieval.channel == "webapp"
    for field in ("end_user_id", "response_id", "conversation_id", "api_key_fingerprint"):
        assert getattr(retrieval, field) == getattr(create, field), field
    assert retrieval.previous_response_id == create.previous_response_id
    assert retrieval.full_response == create.full_response


def test_retrieval_calls_mka1_as_the_same_end_user(
    answered: UserMessage, web_client, monkeypatch
) -> None:
    seen: list[tuple[str, str]] = []
    original = InProcessAdapter.send

    def send(self, request, **kwargs):
        seen.append((request.headers["X-On-Behalf-Of"], request.headers["Authorization"]))
        return original(self, request, **kwargs)

    monkeypatch.setattr(InProcessAdapter, "send", send)
    web_client(answered.end_user).get(f"/api/multichannel/{answered.turn.response_id}")
    assert seen == [(answered.end_user_id, "Bearer test-mka1-key-not-real")]


@pytest.mark.parametrize("bad", ["abc", "resp_", "resp_abc-def", "response_1", "resp_a%2Fb"])
def test_a_malformed_response_id_is_400_without_calling_mka1(
    answered: UserMessage, web_client, mka1_calls: Calls, bad: str
) -> None:
    answer = web_client(answered.end_user).get(f"/api/multichannel/{bad}")
    assert answer.status_code == 400
    assert "resp" in answer.json()["error"]
    assert gets(mka1_calls) == []


def test_another_users_response_is_404_like_an_unknown_one(
    answered: UserMessage, web_client, mka1_calls: Calls
) -> None:
    stranger = web_client(EndUser.objects.create())
    theirs = stranger.get(f"/api/multichannel/{answered.turn.response_id}")
    unknown = stranger.get("/api/multichannel/resp_doesnotexist")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == unknown.json()
    assert gets(mka1_calls) == []
    assert not AuditEvent.objects.filter(action="responses.get").exists()


def test_signed_out_requests_are_401_without_calling_mka1(
    answered: UserMessage, client: Client, mka1_calls: Calls
) -> None:
    for path in (
        f"/api/multichannel/{answered.turn.response_id}",
        "/api/conversation",
        "/api/conversation/items/msg_1",
        "/api/messages/1",
    ):
        assert client.get(path).status_code == 401, path
    assert (
        client.post("/api/messages", {"text": "hi"}, content_type="application/json").status_code
        == 401
    )
    assert gets(mka1_calls) == []


@pytest.mark.parametrize(
    ("fault", "code"),
    [({"status": 404}, 404), ({"status": 500, "times": 4}, 502), ({"status": 401}, 502)],
)
def test_mka1_errors_become_clear_json_errors(
    answered: UserMessage, web_client, fault: dict, code: int
) -> None:
    fault_inject("responses.get", **fault)
    answer = web_client(answered.end_user).get(f"/api/multichannel/{answered.turn.response_id}")
    assert answer.status_code == code
    assert answer["Content-Type"] == "application/json"
    assert set(answer.json()) == {"error"}


def test_an_mka1_timeout_is_504(answered: UserMessage, web_client, monkeypatch) -> None:
    def timeout(self, request, **kwargs):
        raise requests.ReadTimeout("slow")

    monkeypatch.setattr(InProcessAdapter, "send", timeout)
    answer = web_client(answered.end_user).get(f"/api/multichannel/{answered.turn.response_id}")
    assert answer.status_code == 504
    assert "time" in answer.json()["error"]


# --- the thread and its items ---------------------------------------------------------------


def test_the_thread_lists_both_channels_with_response_ids(
    answered: UserMessage, web_client, whatsapp_says, django_capture_on_commit_callbacks
) -> None:
    whatsapp_says("LOGIN")
    browser = web_client(answered.end_user)
    with django_capture_on_commit_callbacks(execute=True):
        browser.post("/api/messages", {"text": "from the web"}, content_type="application/json")
    turns = browser.get("/api/conversation").json()["turns"]
    assert [(t["channel"], t["text"]) for t in turns] == [
        ("whatsapp", "What is the capital of France?"),
        ("whatsapp", "LOGIN"),
        ("webapp", "from the web"),
    ]
    assert turns[0]["response_id"] == answered.turn.response_id
    assert turns[1]["response_id"] is None  # the sign-in reply is not an MKA1 response
    assert turns[2]["reply"] == "You said: from the web"


def test_the_thread_shows_only_the_signed_in_users_messages(
    answered: UserMessage, web_client
) -> None:
    stranger = web_client(EndUser.objects.create())
    assert stranger.get("/api/conversation").json() == {"turns": []}


def test_a_conversation_item_is_fetched_from_mka1_and_audited(
    answered: UserMessage, web_client
) -> None:
    browser = web_client(answered.end_user)
    from multichannel.mka1 import client

    items = client().list_conversation_items(
        answered.end_user_id, answered.turn.conversation.mka1_conversation_id
    )
    item_id = items.data["data"][0]["id"]
    answer = browser.get(f"/api/conversation/items/{item_id}")
    assert answer.status_code == 200
    assert answer.json()["item"]["id"] == item_id
    event = AuditEvent.objects.get(action="conversations.items.get")
    assert (event.channel, event.end_user_id) == ("webapp", answered.end_user_id)
    assert event.response_id == answered.turn.response_id
    assert event.conversation_id == answered.turn.conversation.mka1_conversation_id


def test_conversation_item_errors(answered: UserMessage, web_client) -> None:
    browser = web_client(answered.end_user)
    assert browser.get("/api/conversation/items/bad%20id").status_code == 400
    assert browser.get("/api/conversation/items/msg_unknown").status_code == 404
    assert (
        web_client(EndUser.objects.create()).get("/api/conversation/items/msg_1").status_code == 404
    )


# --- continuing on the web ----------------------------------------------------------------


def test_a_web_message_continues_the_same_chain(
    answered: UserMessage, web_client, mka1_calls: Calls, django_capture_on_commit_callbacks
) -> None:
    browser = web_client(answered.end_user)
    with django_capture_on_commit_callbacks(execute=True):
        answer = browser.post(
            "/api/messages", {"text": "and Spain?"}, content_type="application/json"
        )
    assert answer.status_code == 202
    message_id = answer.json()["id"]
    polled = browser.get(f"/api/messages/{message_id}").json()
    assert polled["reply"] == "You said: and Spain?"
    (create,) = response_creates(mka1_calls)
    assert create["metadata"]["channel"] == "webapp"
    assert create["conversation"] == answered.turn.conversation.mka1_conversation_id
    assert create["previous_response_id"] == answered.turn.response_id
    event = AuditEvent.objects.filter(action="responses.create").latest("id")
    assert (event.channel, event.end_user_id) == ("webapp", answered.end_user_id)
    assert event.previous_response_id == answered.turn.response_id


@pytest.mark.parametrize(
    "body", [{}, {"text": ""}, {"text": "   "}, {"text": "x" * 4097}, {"text": ["a"]}]
)
def test_bad_web_messages_are_400_and_store_nothing(
    answered: UserMessage, web_client, body: dict
) -> None:
    browser = web_client(answered.end_user)
    before = UserMessage.objects.count()
    answer = browser.post("/api/messages", body, content_type="application/json")
    assert answer.status_code == 400
    assert "text" in answer.json()["error"]
    assert UserMessage.objects.count() == before


def test_malformed_json_is_400(answered: UserMessage, web_client) -> None:
    answer = web_client(answered.end_user).post(
        "/api/messages", "{not json", content_type="application/json"
    )
    assert answer.status_code == 400


def test_unsafe_requests_need_the_csrf_token(answered: UserMessage, web_client) -> None:
    browser = web_client(answered.end_user, enforce_csrf_checks=True)
    answer = browser.post("/api/messages", {"text": "hi"}, content_type="application/json")
    assert answer.status_code == 403
    assert "CSRF" in answer.json()["error"]
    browser.get("/")  # the page sets the CSRF cookie
    token = browser.cookies["csrftoken"].value
    answer = browser.post(
        "/api/messages",
        {"text": "hi"},
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert answer.status_code == 202


def test_another_users_message_is_404(answered: UserMessage, web_client) -> None:
    stranger = web_client(EndUser.objects.create())
    assert stranger.get(f"/api/messages/{answered.pk}").status_code == 404


def test_sending_is_throttled(answered: UserMessage, web_client, monkeypatch) -> None:
    from web.auth import SendThrottle

    monkeypatch.setattr(SendThrottle, "THROTTLE_RATES", {"send": "2/min"})
    browser = web_client(answered.end_user)
    codes = [
        browser.post(
            "/api/messages", {"text": f"m{i}"}, content_type="application/json"
        ).status_code
        for i in range(3)
    ]
    assert codes == [202, 202, 429]


@pytest.mark.django_db(transaction=True)
def test_web_and_whatsapp_at_the_same_moment_keep_one_linear_chain(
    post_webhook, web_client
) -> None:
    from multichannel.sandbox import whatsapp as wa
    from whatsapp.services import identity_resolve

    identity = identity_resolve(wa_id="15559990000", bsuid=None)
    browser = web_client(identity.end_user)
    event = wa.message_event(wa_id="15559990000", text="from the phone")

    outcomes = at_once(
        lambda: webhook_post(wa.encode(wa.webhook_payload([event]))),
        lambda: browser.post(
            "/api/messages", {"text": "from the web"}, content_type="application/json"
        ),
    )

    assert [o for o in outcomes if isinstance(o, BaseException)] == []
    from multichannel.tasks import recover_unfinished

    recover_unfinished.call_local()
    turns = list(Turn.objects.order_by("id"))
    assert sorted(t.channel for t in turns) == ["webapp", "whatsapp"]
    assert turns[0].previous_response_id is None
    assert turns[1].previous_response_id == turns[0].response_id


# --- OpenAPI ---------------------------------------------------------------------------------


def test_the_openapi_schema_is_served(client: Client) -> None:
    answer = client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert answer.status_code == 200
    schema = answer.json()
    assert "/api/multichannel/{response_id}" in schema["paths"]
    assert "/api/messages" in schema["paths"]


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/api/multichannel/resp_a%0Ab", 400),
        ("/api/multichannel/", 400),
        ("/api/conversation/items/a/b", 400),
        ("/api/messages/-5", 404),
        ("/api/messages/null%2Cnull", 404),
        ("/api/messages/99999999999999999999999", 404),
    ],
)
def test_malformed_ids_get_json_errors_not_html(
    answered: UserMessage, web_client, path: str, code: int
) -> None:
    answer = web_client(answered.end_user).get(path)
    assert answer.status_code == code
    assert answer["Content-Type"] == "application/json"
    assert set(answer.json()) == {"error"}


def test_a_body_that_is_not_an_object_is_400(answered: UserMessage, web_client) -> None:
    answer = web_client(answered.end_user).post(
        "/api/messages", "[1, 2]", content_type="application/json"
    )
    assert answer.status_code == 400
    assert answer.json() == {"error": "the body must be a JSON object"}


# --- hardening: every MKA1 read audited, failures too; a daily allowance ---------------------


@pytest.mark.parametrize("status", [502, 504])
def test_a_failed_retrieval_is_an_audit_event_with_its_status(
    answered: UserMessage, web_client, status: int
) -> None:
    fault_inject("responses.get", status=status, times=4)  # past the client's own retries
    answer = web_client(answered.end_user).get(f"/api/multichannel/{answered.turn.response_id}")
    assert answer.status_code == 502
    failed = AuditEvent.objects.get(action="responses.get.failed")
    assert (failed.channel, failed.end_user_id) == ("webapp", answered.end_user_id)
    assert failed.response_id == answered.turn.response_id
    assert failed.context["status"] == status
    assert (
        failed.api_key_fingerprint
        == AuditEvent.objects.get(action="responses.create").api_key_fingerprint
    )


def test_a_failed_item_read_is_an_audit_event(answered: UserMessage, web_client) -> None:
    answer = web_client(answered.end_user).get("/api/conversation/items/msg_missing")
    assert answer.status_code == 404
    failed = AuditEvent.objects.get(action="conversations.items.get.failed")
    assert failed.context["status"] == 404
    assert failed.context["item_id"] == "msg_missing"


def test_probing_with_failing_reads_cannot_flood_the_ledger(
    answered: UserMessage, web_client, settings
) -> None:
    settings.AUDIT_FAILURES_PER_USER_HOUR = 3
    browser = web_client(answered.end_user)
    for n in range(8):
        assert browser.get(f"/api/conversation/items/msg_probe{n}").status_code == 404
    failed = AuditEvent.objects.filter(action="conversations.items.get.failed").order_by("sequence")
    assert failed.count() == 3
    assert failed.last().context["further_failures_this_hour"] == "logged, not recorded"


def test_retrievals_per_user_and_day_are_capped(
    answered: UserMessage, web_client, settings
) -> None:
    settings.API_RETRIEVALS_PER_DAY = 3
    browser = web_client(answered.end_user)
    url = f"/api/multichannel/{answered.turn.response_id}"
    assert [browser.get(url).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert AuditEvent.objects.filter(action="responses.get").count() == 3
    # Until the UTC day ends, not the read rate's window.
    assert abs(int(browser.get(url)["Retry-After"]) - seconds_left_in_window(24 * 3600)) <= 2


# --- one error shape ------------------------------------------------------------------------


def test_every_api_error_has_the_one_shape(
    answered: UserMessage, web_client, client: Client, settings
) -> None:
    signed_in = web_client(answered.end_user)
    answers = {
        "signed out": client.get("/api/conversation"),
        "bad id": signed_in.get("/api/multichannel/nope"),
        "unknown": signed_in.get("/api/messages/999999"),
        "method": signed_in.delete("/api/conversation"),
        "media type": signed_in.post("/api/messages", data="text=x", content_type="text/plain"),
        "validation": signed_in.post("/api/messages", data={}, content_type="application/json"),
        "csrf": web_client(answered.end_user, enforce_csrf_checks=True).post(
            "/api/messages", data={"text": "hi"}, content_type="application/json"
        ),
    }
    settings.API_RETRIEVALS_PER_DAY = 0
    answers["throttled"] = signed_in.get(f"/api/multichannel/{answered.turn.response_id}")
    expected = {
        "signed out": 401,
        "bad id": 400,
        "unknown": 404,
        "method": 405,
        "media type": 415,
        "validation": 400,
        "csrf": 403,
        "throttled": 429,
    }
    assert {name: answer.status_code for name, answer in answers.items()} == expected
    for name, answer in answers.items():
        body = answer.json()
        assert set(body) == {"error"}, name
        assert isinstance(body["error"], str), name
        assert body["error"], name
    assert answers["validation"].json()["error"] == "text: This field is required."
