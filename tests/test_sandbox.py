"""The MKA1 sandbox is a faithful stand-in: its bodies are what the official SDK parses,
it keeps every user's data to that user, refuses what MKA1 refuses, and misbehaves
exactly as planned."""

import importlib
import json
import time
from datetime import timedelta
from io import StringIO
from typing import TYPE_CHECKING, Any

import pydantic
import pytest
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.urls import Resolver404, clear_url_caches, resolve
from django.utils import timezone
from meetkai_mka1.models import ConversationObject, OutputMessage, ResponseObject
from meetkai_mka1.models.conversations_items_listop import (
    ConversationsItemsListInputMessageItem,
    ConversationsItemsListResponse,
)
from meetkai_mka1.models.conversations_items_retrieveop import (
    ConversationsItemsRetrieveInputMessageItem,
    ConversationsItemsRetrieveResponse,
)
from meetkai_mka1.models.outputmessagewithid import OutputMessageWithID
from pytest_django import Settings

import multichannel.urls
from multichannel import mka1
from multichannel.sandbox.faults import fault_inject, faults_clear
from multichannel.sandbox.models import (
    SandboxConversation,
    SandboxFault,
    SandboxItem,
    SandboxResponse,
)
from multichannel.sandbox.transport import InProcessAdapter

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Answer

pytestmark = pytest.mark.django_db

API = "/sandbox/mka1/api/v1/llm"
ALICE = "user_alice"
BOB = "user_bob"
KEY = "test-key-alice-not-real"
OTHER_KEY = "test-key-other-not-real"
MODEL = "meetkai:functionary-pt"
ITEM_ADAPTER: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ConversationsItemsRetrieveResponse)

# The same owner seen by a different end user, or through a different API key.
OTHER_OWNERS = pytest.mark.parametrize(
    ("user", "key"), [(BOB, KEY), (ALICE, OTHER_KEY)], ids=["other-user", "other-api-key"]
)


def auth(user: str = ALICE, key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "X-On-Behalf-Of": user}


def post(client: Client, path: str, body: Any, *, user: str = ALICE, key: str = KEY) -> "Answer":
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(
        f"{API}{path}", data, content_type="application/json", headers=auth(user, key)
    )


def get(client: Client, path: str, *, user: str = ALICE, key: str = KEY, **params: str) -> "Answer":
    return client.get(f"{API}{path}", params, headers=auth(user, key))


def respond(
    client: Client,
    conversation_id: str | None,
    text: str = "hello",
    *,
    previous: str | None = None,
    user: str = ALICE,
    key: str = KEY,
    channel: str = "whatsapp",
) -> "Answer":
    body: dict[str, Any] = {"model": MODEL, "input": text, "store": True, "stream": False}
    if conversation_id is not None:
        body["conversation"] = {"id": conversation_id}
    if previous is not None:
        body["previous_response_id"] = previous
    body["metadata"] = {"channel": channel}
    return post(client, "/responses", body, user=user, key=key)


def error_of(answer: "Answer") -> dict[str, Any]:
    error: dict[str, Any] = answer.json()["error"]
    return error


@pytest.fixture
def conversation(client: Client) -> dict[str, Any]:
    answer = post(client, "/conversations", {"metadata": {"channel": "whatsapp"}})
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


@pytest.fixture
def turn(client: Client, conversation: dict[str, Any]) -> "Answer":
    answer = respond(client, conversation["id"])
    assert answer.status_code == 200
    return answer


def stored_counts() -> tuple[int, int]:
    return SandboxResponse.objects.count(), SandboxItem.objects.count()


# --- the wire format is the SDK's ------------------------------------------------------


def test_created_conversation_is_an_sdk_conversation_object(
    conversation: dict[str, Any],
) -> None:
    parsed = ConversationObject.model_validate(conversation)
    assert parsed.id.startswith("conv_")
    assert parsed.object == "conversation"
    assert parsed.metadata == {"channel": "whatsapp"}


def test_created_response_is_an_sdk_response_object(
    conversation: dict[str, Any], turn: "Answer"
) -> None:
    assert turn["Content-Type"] == "application/json"
    body = turn.json()
    parsed = ResponseObject.model_validate(body)
    assert mka1.is_response_id(parsed.id)
    assert parsed.status == "completed"
    assert parsed.model == MODEL
    assert parsed.conversation is not None
    assert parsed.conversation.id == conversation["id"]
    assert parsed.previous_response_id is None
    assert parsed.metadata == {"channel": "whatsapp"}
    assert parsed.output_text == "You said: hello"
    assert parsed.usage.total_tokens == parsed.usage.input_tokens + parsed.usage.output_tokens
    # The SDK's output union is ambiguous between input and output messages; the item
    # must be a well-formed assistant output message in its own right.
    message = OutputMessage.model_validate(body["output"][0])
    assert message.role == "assistant"
    assert message.content[0].text == "You said: hello"  # type: ignore[union-attr]


def test_response_without_a_conversation_is_an_sdk_response_object(client: Client) -> None:
    answer = respond(client, None)
    assert answer.status_code == 200
    parsed = ResponseObject.model_validate(answer.json())
    assert parsed.conversation is None
    assert "conversation" not in answer.json()


def test_retrieved_response_is_byte_identical_to_the_created_one(
    client: Client, conversation: dict[str, Any]
) -> None:
    # Non-ASCII text, so a re-encoding on the way out (escaping, spacing) would show.
    created = respond(client, conversation["id"], "¿Qué tal? 你好 ✓")
    assert created.status_code == 200
    answer = get(client, f"/responses/{created.json()['id']}")
    assert answer.status_code == 200
    assert answer.content == created.content
    assert "✓".encode() in answer.content
    ResponseObject.model_validate_json(answer.content)


def test_chained_response_names_its_previous_response(
    client: Client, conversation: dict[str, Any], turn: "Answer"
) -> None:
    answer = respond(client, conversation["id"], "again", previous=turn.json()["id"])
    assert answer.status_code == 200
    parsed = ResponseObject.model_validate(answer.json())
    assert parsed.previous_response_id == turn.json()["id"]
    assert parsed.conversation is not None
    assert parsed.conversation.id == conversation["id"]


def test_listed_items_are_an_sdk_item_list(
    client: Client, conversation: dict[str, Any], turn: "Answer"
) -> None:
    answer = get(client, f"/conversations/{conversation['id']}/items")
    assert answer.status_code == 200
    body = answer.json()
    # Exactly the SDK's fields, nothing it does not know about.
    assert set(body) == {"object", "data", "has_more", "last_id"}
    parsed = ConversationsItemsListResponse.model_validate(body)
    assert parsed.has_more is False
    assert parsed.last_id == body["data"][-1]["id"]
    user_item, assistant_item = body["data"]
    assert ConversationsItemsListInputMessageItem.model_validate(user_item).role == "user"
    assert user_item["content"] == [{"type": "input_text", "text": "hello"}]
    reply = OutputMessageWithID.model_validate(assistant_item)
    assert reply.id == turn.json()["output"][0]["id"]
    for item in body["data"]:
        assert item["response_id"] == turn.json()["id"]
        assert item["metadata"] == {"channel": "whatsapp"}


def test_an_empty_item_list_is_still_an_sdk_item_list(
    client: Client, conversation: dict[str, Any]
) -> None:
    body = get(client, f"/conversations/{conversation['id']}/items").json()
    parsed = ConversationsItemsListResponse.model_validate(body)
    assert parsed.data == []
    assert parsed.has_more is False


def test_retrieved_item_is_an_sdk_item(
    client: Client, conversation: dict[str, Any], turn: "Answer"
) -> None:
    listed = get(client, f"/conversations/{conversation['id']}/items").json()["data"]
    for expected in listed:
        answer = get(client, f"/conversations/{conversation['id']}/items/{expected['id']}")
        assert answer.status_code == 200
        assert answer.json() == expected
        ITEM_ADAPTER.validate_python(answer.json())
    question = ConversationsItemsRetrieveInputMessageItem.model_validate(listed[0])
    assert question.role == "user"
    OutputMessageWithID.model_validate(listed[1])


# --- one owner's data stays theirs ---------------------------------------------------


@OTHER_OWNERS
def test_response_is_not_found_for_another_owner(
    client: Client, turn: "Answer", user: str, key: str
) -> None:
    response_id = turn.json()["id"]
    foreign = get(client, f"/responses/{response_id}", user=user, key=key)
    assert foreign.status_code == 404
    # Indistinguishable from an id that does not exist at all.
    SandboxResponse.objects.filter(id=response_id).delete()
    missing = get(client, f"/responses/{response_id}")
    assert foreign.json() == missing.json()


@OTHER_OWNERS
def test_conversation_items_are_not_found_for_another_owner(
    client: Client, conversation: dict[str, Any], turn: "Answer", user: str, key: str
) -> None:
    items = f"/conversations/{conversation['id']}/items"
    item_id = turn.json()["output"][0]["id"]
    assert get(client, items, user=user, key=key).status_code == 404
    assert get(client, f"{items}/{item_id}", user=user, key=key).status_code == 404
    assert error_of(get(client, items, user=user, key=key))["type"] == "not_found"
    # The owner still sees them.
    assert get(client, f"{items}/{item_id}").status_code == 200


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer ", "Bearer    ", "Basic dXNlcjpwYXNz", "test-key"]
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/conversations"),
        ("post", "/responses"),
        ("get", "/responses/resp_abc123"),
        ("get", "/conversations/conv_abc/items"),
        ("get", "/conversations/conv_abc/items/msg_abc"),
    ],
)
def test_a_call_without_a_bearer_token_is_unauthorized(
    client: Client, authorization: str | None, method: str, path: str
) -> None:
    headers = {"X-On-Behalf-Of": ALICE}
    if authorization is not None:
        headers["Authorization"] = authorization
    if method == "post":
        answer = client.post(
            f"{API}{path}",
            json.dumps({"model": MODEL, "input": "hi"}),
            content_type="application/json",
            headers=headers,
        )
    else:
        answer = client.get(f"{API}{path}", headers=headers)
    assert answer.status_code == 401
    assert error_of(answer)["type"] == "authentication_error"
    assert stored_counts() == (0, 0)
    assert SandboxConversation.objects.count() == 0


@OTHER_OWNERS
def test_chaining_to_another_owners_response_is_not_found(
    client: Client, turn: "Answer", user: str, key: str
) -> None:
    before = stored_counts()
    answer = respond(client, None, previous=turn.json()["id"], user=user, key=key)
    assert answer.status_code == 404
    assert error_of(answer)["type"] == "not_found"
    assert stored_counts() == before


@OTHER_OWNERS
def test_talking_in_another_owners_conversation_is_not_found(
    client: Client, conversation: dict[str, Any], user: str, key: str
) -> None:
    answer = respond(client, conversation["id"], user=user, key=key)
    assert answer.status_code == 404
    assert error_of(answer)["type"] == "not_found"
    assert stored_counts() == (0, 0)


# --- what MKA1 refuses, the sandbox refuses ------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"model": "m", "input": ', None),
        ("[]", None),
        ({"input": "hi"}, "model"),
        ({"model": "", "input": "hi"}, "model"),
        ({"model": MODEL, "input": "hi", "stream": True}, "stream"),
        ({"model": MODEL}, None),
        ({"model": MODEL, "input": "hi", "metadata": {"channel": 1}}, None),
    ],
    ids=[
        "bad-json",
        "not-an-object",
        "missing-model",
        "empty-model",
        "stream",
        "missing-input",
        "non-string-metadata",
    ],
)
def test_a_bad_create_request_is_refused_and_changes_nothing(
    client: Client, body: Any, param: str | None
) -> None:
    answer = post(client, "/responses", body)
    assert answer.status_code == 400
    error = error_of(answer)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["code"] == param
    assert stored_counts() == (0, 0)


def test_a_create_request_that_is_not_json_is_unsupported(client: Client) -> None:
    answer = client.post(f"{API}/responses", "model=m", content_type="text/plain", headers=auth())
    assert answer.status_code == 415


@pytest.mark.parametrize("bad_id", ["msg_abc123", "resp_", "resp", "respabc", "resp_abc.def"])
def test_a_malformed_response_id_is_a_bad_request(client: Client, bad_id: str) -> None:
    answer = get(client, f"/responses/{bad_id}")
    assert answer.status_code == 400
    assert error_of(answer)["code"] == "response_id"


def test_an_unknown_well_formed_response_id_is_not_found(client: Client) -> None:
    assert get(client, "/responses/resp-0123456789abcdef").status_code == 404


# --- items pagination ----------------------------------------------------------------


@pytest.fixture
def three_turns(client: Client, conversation: dict[str, Any]) -> list[str]:
    """The six item ids of three turns, oldest first."""
    previous = None
    for text in ("one", "two", "three"):
        answer = respond(client, conversation["id"], text, previous=previous)
        assert answer.status_code == 200
        previous = answer.json()["id"]
    return list(
        SandboxItem.objects.filter(conversation_id=conversation["id"])
        .order_by("id")
        .values_list("item_id", flat=True)
    )


def test_items_page_forward_with_limit_and_after(
    client: Client, conversation: dict[str, Any], three_turns: list[str]
) -> None:
    path = f"/conversations/{conversation['id']}/items"
    first = get(client, path, order="asc", limit="4").json()
    assert [item["id"] for item in first["data"]] == three_turns[:4]
    assert first["has_more"] is True
    assert first["last_id"] == three_turns[3]
    rest = get(client, path, order="asc", limit="4", after=first["last_id"]).json()
    assert [item["id"] for item in rest["data"]] == three_turns[4:]
    assert rest["has_more"] is False
    assert rest["last_id"] == three_turns[5]
    ConversationsItemsListResponse.model_validate(first)
    ConversationsItemsListResponse.model_validate(rest)


def test_items_page_backward_in_descending_order(
    client: Client, conversation: dict[str, Any], three_turns: list[str]
) -> None:
    path = f"/conversations/{conversation['id']}/items"
    newest = list(reversed(three_turns))
    first = get(client, path, order="desc", limit="5").json()
    assert [item["id"] for item in first["data"]] == newest[:5]
    assert first["has_more"] is True
    rest = get(client, path, order="desc", limit="5", after=first["last_id"]).json()
    assert [item["id"] for item in rest["data"]] == newest[5:]
    assert rest["has_more"] is False


def test_a_page_that_ends_exactly_at_the_last_item_has_no_more(
    client: Client, conversation: dict[str, Any], three_turns: list[str]
) -> None:
    body = get(client, f"/conversations/{conversation['id']}/items", limit="6").json()
    assert len(body["data"]) == 6
    assert body["has_more"] is False


def test_items_default_to_twenty_oldest_first_like_mka1(
    client: Client, conversation: dict[str, Any], three_turns: list[str]
) -> None:
    body = get(client, f"/conversations/{conversation['id']}/items").json()
    assert [item["id"] for item in body["data"]] == three_turns


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "101"}, {"limit": "ten"}, {"order": "newest"}],
    ids=["limit-0", "limit-101", "limit-not-a-number", "unknown-order"],
)
def test_bad_paging_parameters_are_a_bad_request(
    client: Client, conversation: dict[str, Any], params: dict[str, str]
) -> None:
    answer = get(client, f"/conversations/{conversation['id']}/items", **params)
    assert answer.status_code == 400
    assert error_of(answer)["type"] == "invalid_request_error"


def test_paging_after_an_unknown_item_is_not_found(
    client: Client, conversation: dict[str, Any], turn: "Answer"
) -> None:
    answer = get(client, f"/conversations/{conversation['id']}/items", after="msg_nope")
    assert answer.status_code == 404


# --- the conversation lock -----------------------------------------------------------


def _lock_for_a_minute(conversation_id: str) -> None:
    # Stands in for a turn that another process has in flight.
    SandboxConversation.objects.filter(pk=conversation_id).update(
        locked_until=timezone.now() + timedelta(minutes=1)
    )


def test_a_locked_conversation_refuses_a_second_turn_with_409(
    client: Client, conversation: dict[str, Any]
) -> None:
    _lock_for_a_minute(conversation["id"])
    locked_until = SandboxConversation.objects.get(pk=conversation["id"]).locked_until
    answer = respond(client, conversation["id"])
    assert answer.status_code == 409
    assert error_of(answer)["code"] == "conversation_locked"
    assert stored_counts() == (0, 0)
    # The refused turn must not release the lock held by the turn in flight.
    assert SandboxConversation.objects.get(pk=conversation["id"]).locked_until == locked_until


def test_chaining_by_previous_response_alone_also_meets_the_lock(
    client: Client, conversation: dict[str, Any], turn: "Answer"
) -> None:
    _lock_for_a_minute(conversation["id"])
    answer = respond(client, None, previous=turn.json()["id"])
    assert answer.status_code == 409


def test_the_client_sees_a_locked_conversation_as_busy_and_transient(
    settings: Settings,
) -> None:
    settings.MKA1_MAX_RETRIES = 0
    api = mka1.client()
    conversation = api.create_conversation(ALICE)
    _lock_for_a_minute(conversation.id)
    with pytest.raises(mka1.Mka1ConversationBusyError) as caught:
        api.create_response(
            ALICE,
            conversation_id=conversation.id,
            message="hello",
            previous_response_id=None,
            channel="whatsapp",
        )
    assert caught.value.transient is True
    assert caught.value.status == 409


def test_a_finished_turn_releases_the_lock(conversation: dict[str, Any], turn: "Answer") -> None:
    assert SandboxConversation.objects.get(pk=conversation["id"]).locked_until is None


def test_an_expired_lock_does_not_block_the_next_turn(
    client: Client, conversation: dict[str, Any]
) -> None:
    SandboxConversation.objects.filter(pk=conversation["id"]).update(
        locked_until=timezone.now() - timedelta(seconds=1)
    )
    assert respond(client, conversation["id"]).status_code == 200
    assert SandboxConversation.objects.get(pk=conversation["id"]).locked_until is None


# --- planned faults ------------------------------------------------------------------


def test_a_fault_answers_its_status_for_the_next_calls_then_stops(
    client: Client, turn: "Answer"
) -> None:
    fault_inject("responses.get", status=503, times=2)
    path = f"/responses/{turn.json()['id']}"
    statuses = [get(client, path).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert SandboxFault.objects.get().remaining == 0


def test_an_injected_failure_is_an_error_body_the_client_calls_transient(
    client: Client, settings: Settings
) -> None:
    settings.MKA1_MAX_RETRIES = 0
    fault_inject("conversations.create", status=503)
    with pytest.raises(mka1.Mka1ServerError) as caught:
        mka1.client().create_conversation(ALICE)
    assert caught.value.transient is True
    assert caught.value.body == {"error": {"message": "Injected failure", "type": "server_error"}}
    assert SandboxConversation.objects.count() == 0


def test_a_fault_on_one_endpoint_leaves_the_others_alone(
    client: Client, conversation: dict[str, Any], turn: "Answer"
) -> None:
    fault_inject("responses.create", status=500)
    assert get(client, f"/responses/{turn.json()['id']}").status_code == 200
    assert get(client, f"/conversations/{conversation['id']}/items").status_code == 200
    assert post(client, "/conversations", {}).status_code == 200
    assert respond(client, conversation["id"]).status_code == 500
    assert respond(client, conversation["id"]).status_code == 200


def test_a_wildcard_fault_matches_every_endpoint(
    client: Client, conversation: dict[str, Any], turn: "Answer"
) -> None:
    fault_inject("*", status=502, times=5)
    item_id = turn.json()["output"][0]["id"]
    calls = [
        lambda: post(client, "/conversations", {}),
        lambda: respond(client, conversation["id"]),
        lambda: get(client, f"/responses/{turn.json()['id']}"),
        lambda: get(client, f"/conversations/{conversation['id']}/items"),
        lambda: get(client, f"/conversations/{conversation['id']}/items/{item_id}"),
    ]
    assert [call().status_code for call in calls] == [502] * 5
    assert [call().status_code for call in calls] == [200] * 5


def test_faults_are_used_in_the_order_they_were_planned(client: Client, turn: "Answer") -> None:
    fault_inject("*", status=500)
    fault_inject("responses.get", status=429)
    path = f"/responses/{turn.json()['id']}"
    assert [get(client, path).status_code for _ in range(3)] == [500, 429, 200]


def test_an_unauthenticated_call_does_not_use_up_a_fault(client: Client) -> None:
    fault_inject("conversations.create", status=500)
    anonymous = client.post(f"{API}/conversations", "{}", content_type="application/json")
    assert anonymous.status_code == 401
    assert post(client, "/conversations", {}).status_code == 500


def test_a_delay_fault_waits_then_answers_normally(client: Client, turn: "Answer") -> None:
    fault_inject("responses.get", delay_ms=5)
    started = time.perf_counter()
    answer = get(client, f"/responses/{turn.json()['id']}")
    assert time.perf_counter() - started >= 0.005
    assert answer.status_code == 200
    assert answer.content == turn.content


def test_a_delay_with_a_status_waits_then_fails(client: Client, turn: "Answer") -> None:
    fault_inject("responses.get", status=504, delay_ms=5)
    started = time.perf_counter()
    answer = get(client, f"/responses/{turn.json()['id']}")
    assert time.perf_counter() - started >= 0.005
    assert answer.status_code == 504


def test_a_planned_success_body_replaces_the_answer(
    client: Client, conversation: dict[str, Any]
) -> None:
    planned = {"id": "resp_planned1", "object": "response", "output_text": "scripted"}
    fault_inject("responses.create", status=200, body=planned)
    answer = respond(client, conversation["id"])
    assert answer.status_code == 200
    assert answer.json() == planned
    assert stored_counts() == (0, 0)


def test_a_planned_error_body_and_headers_reach_the_client(settings: Settings) -> None:
    settings.MKA1_MAX_RETRIES = 0
    fault_inject(
        "conversations.create",
        status=429,
        body={"error": {"message": "slow down", "type": "rate_limit_error"}},
        headers={"Retry-After": "7"},
    )
    with pytest.raises(mka1.Mka1RateLimitError) as caught:
        mka1.client().create_conversation(ALICE)
    assert caught.value.retry_after == 7.0
    assert "slow down" in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs a status, a delay"),
        ({"status": 500, "times": 0}, "times must be at least 1"),
        ({"delay_ms": -5}, "cannot be negative"),
        ({"status": 200}, "2xx fault needs a body"),
    ],
)
def test_a_fault_that_cannot_mean_anything_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fault_inject("responses.create", **kwargs)
    assert SandboxFault.objects.count() == 0


def test_clearing_faults_forgets_every_plan_and_counts_the_live_ones(
    client: Client, turn: "Answer"
) -> None:
    fault_inject("responses.get", status=500)
    fault_inject("*", status=503, times=3)
    assert get(client, f"/responses/{turn.json()['id']}").status_code == 500
    assert faults_clear() == 1
    assert SandboxFault.objects.count() == 0
    assert get(client, f"/responses/{turn.json()['id']}").status_code == 200


def test_sandbox_latency_setting_delays_every_answer(client: Client, settings: Settings) -> None:
    settings.SANDBOX_MKA1_LATENCY_MS = 5
    started = time.perf_counter()
    assert post(client, "/conversations", {}).status_code == 200
    assert time.perf_counter() - started >= 0.005


def test_refuse_both_setting_refuses_conversation_with_previous_response_id(
    client: Client, conversation: dict[str, Any], turn: "Answer", settings: Settings
) -> None:
    settings.SANDBOX_MKA1_REFUSE_BOTH = True
    before = stored_counts()
    answer = respond(client, conversation["id"], previous=turn.json()["id"])
    assert answer.status_code == 400
    assert error_of(answer)["code"] == "mutually_exclusive_parameters"
    assert stored_counts() == before
    # Either one alone is still fine.
    assert respond(client, conversation["id"]).status_code == 200
    assert respond(client, None, previous=turn.json()["id"]).status_code == 200


def test_conversation_with_previous_response_id_is_accepted_by_default(
    client: Client, conversation: dict[str, Any], turn: "Answer"
) -> None:
    answer = respond(client, conversation["id"], previous=turn.json()["id"])
    assert answer.status_code == 200


# --- the real client, end to end -----------------------------------------------------


def test_the_real_client_holds_a_whole_conversation_through_the_sandbox() -> None:
    api = mka1.client()
    assert api.base_url == "sandbox://mka1"
    assert isinstance(api.session.get_adapter(f"{api.base_url}/api"), InProcessAdapter)

    conversation = api.create_conversation(ALICE, metadata={"channel": "whatsapp"})
    ConversationObject.model_validate(conversation.data)
    first = api.create_response(
        ALICE,
        conversation_id=conversation.id,
        message="hello",
        previous_response_id=None,
        channel="whatsapp",
    )
    second = api.create_response(
        ALICE,
        conversation_id=conversation.id,
        message="and now?",
        previous_response_id=first.id,
        channel="webapp",
    )
    for created, channel in ((first, "whatsapp"), (second, "webapp")):
        parsed = ResponseObject.model_validate_json(created.raw)
        assert parsed.metadata == {"channel": channel}
        assert parsed.conversation is not None
        assert parsed.conversation.id == conversation.id
    assert second.data["previous_response_id"] == first.id
    assert second.data["output_text"] == "You said: and now?"

    fetched = api.get_response(ALICE, second.id)
    assert fetched.raw == second.raw

    listed = api.list_conversation_items(ALICE, conversation.id)
    ConversationsItemsListResponse.model_validate_json(listed.raw)
    items = listed.data["data"]
    assert [(item["role"], item["metadata"]["channel"]) for item in items] == [
        ("user", "whatsapp"),
        ("assistant", "whatsapp"),
        ("user", "webapp"),
        ("assistant", "webapp"),
    ]
    assert [item["response_id"] for item in items] == [first.id, first.id, second.id, second.id]

    item = api.get_conversation_item(ALICE, conversation.id, items[-1]["id"])
    assert item.data == items[-1]
    assert item.data["content"][0]["text"] == "You said: and now?"
    ITEM_ADAPTER.validate_json(item.raw)


# --- never in production -------------------------------------------------------------


def _reload_root_urlconf() -> None:
    importlib.reload(multichannel.urls)
    clear_url_caches()


def test_the_sandbox_is_not_mounted_when_sandbox_is_off(client: Client) -> None:
    try:
        with override_settings(SANDBOX=False):
            _reload_root_urlconf()
            with pytest.raises(Resolver404):
                resolve(f"{API}/conversations")
            assert post(client, "/conversations", {}).status_code == 404
            assert resolve("/admin/").app_name == "admin"
    finally:
        _reload_root_urlconf()
    assert resolve(f"{API}/conversations").url_name == "mka1-conversations"
    assert SandboxConversation.objects.count() == 0


# --- the sandbox_fault command -------------------------------------------------------


def run_sandbox_fault(*args: str) -> str:
    out = StringIO()
    call_command("sandbox_fault", *args, stdout=out)
    return out.getvalue()


def test_sandbox_fault_plans_failures_for_the_next_calls(client: Client) -> None:
    output = run_sandbox_fault("conversations.create", "--status", "503", "--times", "2")
    assert output == "Planned: the next 2 calls to conversations.create will answer HTTP 503.\n"
    fault = SandboxFault.objects.get()
    assert (fault.endpoint, fault.status, fault.delay_ms, fault.remaining) == (
        "conversations.create",
        503,
        0,
        2,
    )
    statuses = [post(client, "/conversations", {}).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]


def test_sandbox_fault_plans_a_delay() -> None:
    output = run_sandbox_fault("responses.get", "--delay-ms", "5")
    assert (
        output == "Planned: the next call to responses.get will wait 5 ms, then answer normally.\n"
    )
    fault = SandboxFault.objects.get()
    assert (fault.status, fault.delay_ms, fault.remaining) == (None, 5, 1)


def test_sandbox_fault_plans_a_delay_then_a_failure_everywhere() -> None:
    output = run_sandbox_fault("*", "--status", "500", "--delay-ms", "250")
    assert output == (
        "Planned: the next call to any sandbox endpoint will wait 250 ms, then answer HTTP 500.\n"
    )
    assert SandboxFault.objects.get().endpoint == "*"


def test_sandbox_fault_plans_a_retry_after_header(client: Client) -> None:
    output = run_sandbox_fault("conversations.create", "--status", "429", "--retry-after", "3")
    assert output == (
        "Planned: the next call to conversations.create will answer HTTP 429 with Retry-After: 3.\n"
    )
    answer = post(client, "/conversations", {})
    assert (answer.status_code, answer.headers["Retry-After"]) == (429, "3")


def test_sandbox_fault_refuses_a_retry_after_without_a_status() -> None:
    with pytest.raises(CommandError, match="--retry-after goes with an error --status"):
        run_sandbox_fault("responses.create", "--delay-ms", "5", "--retry-after", "3")


def test_sandbox_fault_clear_forgets_every_plan() -> None:
    assert run_sandbox_fault("--clear") == "Cleared 0 planned faults.\n"
    fault_inject("responses.create", status=500)
    assert run_sandbox_fault("--clear") == "Cleared 1 planned fault.\n"
    fault_inject("responses.create", status=500)
    fault_inject("*", delay_ms=5, times=3)
    assert run_sandbox_fault("--clear") == "Cleared 2 planned faults.\n"
    assert SandboxFault.objects.count() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("responses.create", "--status", "abc"), "'abc' is not an HTTP status"),
        (("responses.create", "--status", "700"), "'700' is not an HTTP status"),
        (("responses.create", "--status", "200"), "must be an error status"),
        (("responses.create", "--delay-ms", "-1"), "'-1' is not a whole number of 0 or more"),
        (("responses.create", "--status", "500", "--times", "0"), "of 1 or more"),
        (("Responses Create", "--status", "500"), "is not an endpoint name"),
        (("responses.create",), "give --status, --delay-ms, or both"),
        ((), "give an endpoint"),
        (("responses.create", "--clear"), "--clear takes no endpoint"),
        (("--clear", "--status", "500"), "--clear takes no endpoint"),
    ],
)
def test_sandbox_fault_refuses_bad_input_and_plans_nothing(
    args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        run_sandbox_fault(*args)
    assert SandboxFault.objects.count() == 0


def test_sandbox_fault_refuses_to_run_when_the_sandbox_is_off() -> None:
    with override_settings(SANDBOX=False), pytest.raises(CommandError, match="SANDBOX is off"):
        run_sandbox_fault("responses.create", "--status", "500")
    assert SandboxFault.objects.count() == 0
