"""What an erasure calls at MKA1, as the stand-in answers it: stored responses,
conversation items and conversations are deleted one by one, in the SDK's shapes, only
by their owner; and, as at MKA1, deleting a conversation leaves its items behind, out of
the API's reach, which `held_for` still counts."""

import json
from typing import TYPE_CHECKING, Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from meetkai_mka1.models import ConversationDeletedObject, ConversationObject, DeleteResponseObject

from multichannel.sandbox.audio import spoken_wav
from multichannel.sandbox.faults import fault_inject
from multichannel.sandbox.inspect import feedback_for, held_for
from multichannel.sandbox.models import SandboxConversation, SandboxItem, SandboxResponse

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
NOTHING = {"responses": 0, "conversations": 0, "items": 0, "files": 0, "transcriptions": 0}


def auth(user: str = ALICE, key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "X-On-Behalf-Of": user}


def call(
    client: Client, method: str, path: str, body: Any = None, *, user: str = ALICE, key: str = KEY
) -> "Answer":
    if body is None:
        return client.generic(method, f"{API}{path}", headers=auth(user, key))
    return client.generic(
        method, f"{API}{path}", json.dumps(body), "application/json", headers=auth(user, key)
    )


class Person:
    """Everything one user left at MKA1: a conversation of two turns, a file, a
    transcription."""

    def __init__(self, client: Client, user: str = ALICE) -> None:
        self.user = user
        self.conversation = call(client, "POST", "/conversations", {}, user=user).json()["id"]
        self.responses: list[str] = []
        for text in ("one", "two"):
            body = {"model": MODEL, "input": text, "conversation": {"id": self.conversation}}
            self.responses.append(call(client, "POST", "/responses", body, user=user).json()["id"])
        self.items = [
            item["id"]
            for item in call(client, "GET", f"/conversations/{self.conversation}/items", user=user)
            .json()["data"]
        ]  # fmt: skip
        upload = SimpleUploadedFile("a.pdf", b"%PDF-1.4", content_type="application/pdf")
        self.file = client.post(
            f"{API}/files", {"file": upload, "purpose": "user_data"}, headers=auth(user)
        ).json()["id"]
        voice = SimpleUploadedFile("v.wav", spoken_wav("hi"), content_type="audio/wav")
        client.post(f"{API}/speech/transcriptions", {"file": voice}, headers=auth(user))
        self.transcription = call(
            client, "GET", "/speech/transcriptions/history", user=user
        ).json()["data"][0]["id"]


@pytest.fixture
def alice(client: Client) -> Person:
    return Person(client)


@pytest.fixture
def bob(client: Client) -> Person:
    return Person(client, BOB)


def test_held_for_counts_what_a_user_left(alice: Person, bob: Person) -> None:
    held = {"responses": 2, "conversations": 1, "items": 4, "files": 1, "transcriptions": 1}
    assert held_for(ALICE) == held
    assert held_for(ALICE, api_key=KEY) == held
    assert held_for(ALICE, api_key=OTHER_KEY) == NOTHING
    assert held_for("user_nobody") == NOTHING


# --- one delete at a time ------------------------------------------------------------


def test_a_deleted_response_is_gone_but_its_items_stay(client: Client, alice: Person) -> None:
    response_id = alice.responses[0]
    answer = call(client, "DELETE", f"/responses/{response_id}")
    assert answer.status_code == 200
    parsed = DeleteResponseObject.model_validate(answer.json())
    assert (parsed.id, parsed.object, parsed.deleted) == (response_id, "response", True)
    assert call(client, "GET", f"/responses/{response_id}").status_code == 404
    assert call(client, "DELETE", f"/responses/{response_id}").status_code == 404
    # MKA1 deletes the stored response only; the conversation still shows the turn.
    assert held_for(ALICE)["items"] == 4
    assert held_for(ALICE)["responses"] == 1


def test_deleting_a_malformed_response_id_is_a_bad_request(client: Client) -> None:
    answer = call(client, "DELETE", "/responses/msg_abc")
    assert answer.status_code == 400


def test_a_deleted_item_is_gone_and_the_conversation_is_answered(
    client: Client, alice: Person
) -> None:
    path = f"/conversations/{alice.conversation}/items/{alice.items[0]}"
    answer = call(client, "DELETE", path)
    assert answer.status_code == 200
    parsed = ConversationObject.model_validate(answer.json())
    assert parsed.id == alice.conversation
    assert call(client, "GET", path).status_code == 404
    assert call(client, "DELETE", path).status_code == 404
    listed = call(client, "GET", f"/conversations/{alice.conversation}/items").json()["data"]
    assert [item["id"] for item in listed] == alice.items[1:]


def test_a_conversation_is_retrieved_by_its_owner(client: Client, alice: Person) -> None:
    answer = call(client, "GET", f"/conversations/{alice.conversation}")
    assert answer.status_code == 200
    assert ConversationObject.model_validate(answer.json()).id == alice.conversation


def test_a_deleted_conversation_is_gone_from_every_path(client: Client, alice: Person) -> None:
    path = f"/conversations/{alice.conversation}"
    answer = call(client, "DELETE", path)
    assert answer.status_code == 200
    parsed = ConversationDeletedObject.model_validate(answer.json())
    assert (parsed.id, parsed.object, parsed.deleted) == (
        alice.conversation,
        "conversation.deleted",
        True,
    )
    assert call(client, "GET", path).status_code == 404
    assert call(client, "DELETE", path).status_code == 404
    assert call(client, "GET", f"{path}/items").status_code == 404
    assert call(client, "GET", f"{path}/items/{alice.items[0]}").status_code == 404
    assert call(client, "DELETE", f"{path}/items/{alice.items[0]}").status_code == 404
    body = {"model": MODEL, "input": "still there?", "conversation": alice.conversation}
    assert call(client, "POST", "/responses", body).status_code == 404


def test_deleting_a_conversation_first_strands_its_items(client: Client, alice: Person) -> None:
    # The careless order: the items can no longer be reached, so never deleted.
    call(client, "DELETE", f"/conversations/{alice.conversation}")
    for item_id in alice.items:
        path = f"/conversations/{alice.conversation}/items/{item_id}"
        assert call(client, "DELETE", path).status_code == 404
    assert SandboxItem.objects.filter(conversation_id=alice.conversation).count() == 4
    assert held_for(ALICE)["conversations"] == 0
    assert held_for(ALICE)["items"] == 4


def test_an_erasure_in_the_right_order_leaves_nothing(
    client: Client, alice: Person, bob: Person
) -> None:
    for item_id in alice.items:
        path = f"/conversations/{alice.conversation}/items/{item_id}"
        assert call(client, "DELETE", path).status_code == 200
    assert call(client, "DELETE", f"/conversations/{alice.conversation}").status_code == 200
    for response_id in alice.responses:
        assert call(client, "DELETE", f"/responses/{response_id}").status_code == 200
    assert call(client, "DELETE", f"/files/{alice.file}").status_code == 200
    path = f"/speech/transcriptions/history/{alice.transcription}"
    assert call(client, "DELETE", path).status_code == 200
    assert held_for(ALICE) == NOTHING
    # Bob's are untouched.
    assert held_for(BOB) == {
        "responses": 2,
        "conversations": 1,
        "items": 4,
        "files": 1,
        "transcriptions": 1,
    }


@OTHER_OWNERS
def test_another_owner_deletes_nothing(client: Client, alice: Person, user: str, key: str) -> None:
    before = held_for(ALICE)
    paths = [
        f"/responses/{alice.responses[0]}",
        f"/conversations/{alice.conversation}/items/{alice.items[0]}",
        f"/conversations/{alice.conversation}",
        f"/files/{alice.file}",
        f"/speech/transcriptions/history/{alice.transcription}",
    ]
    for path in paths:
        answer = call(client, "DELETE", path, user=user, key=key)
        assert answer.status_code == 404, path
        assert answer.json()["error"]["type"] == "not_found"
    assert (
        call(client, "GET", f"/conversations/{alice.conversation}", user=user, key=key).status_code
        == 404
    )
    assert held_for(ALICE) == before


@pytest.mark.parametrize(
    "path",
    [
        "/responses/resp_abc123",
        "/conversations/conv_abc",
        "/conversations/conv_abc/items/msg_abc",
        "/files/file-abc",
        "/speech/transcriptions/history/stt_abc",
    ],
)
def test_a_delete_without_a_bearer_token_is_unauthorized(
    client: Client, alice: Person, path: str
) -> None:
    answer = client.delete(f"{API}{path}", headers={"X-On-Behalf-Of": ALICE})
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    ("endpoint", "path"),
    [
        ("responses.delete", "/responses/{response}"),
        ("conversations.delete", "/conversations/{conversation}"),
        ("conversations.items.delete", "/conversations/{conversation}/items/{item}"),
        ("files.delete", "/files/{file}"),
        ("speech.transcriptions.history.delete", "/speech/transcriptions/history/{stt}"),
    ],
)
def test_a_delete_fault_answers_its_status_and_deletes_nothing(
    client: Client, alice: Person, endpoint: str, path: str
) -> None:
    filled = path.format(
        response=alice.responses[0],
        conversation=alice.conversation,
        item=alice.items[0],
        file=alice.file,
        stt=alice.transcription,
    )
    before = held_for(ALICE)
    fault_inject(endpoint, status=503)
    assert call(client, "DELETE", filled).status_code == 503
    assert held_for(ALICE) == before
    assert call(client, "DELETE", filled).status_code == 200


def test_an_unsupported_method_on_a_response_is_not_allowed(client: Client, alice: Person) -> None:
    answer = call(client, "PUT", f"/responses/{alice.responses[0]}", {})
    assert answer.status_code == 405
    assert SandboxResponse.objects.filter(owner_user=ALICE).count() == 2


def test_soft_deleted_conversations_keep_their_rows(client: Client, alice: Person) -> None:
    call(client, "DELETE", f"/conversations/{alice.conversation}")
    conversation = SandboxConversation.objects.get(pk=alice.conversation)
    assert conversation.deleted_at is not None


def test_feedback_for_lists_what_was_received(client: Client, alice: Person) -> None:
    body = {"id": alice.responses[0], "rating": "thumbs_up"}
    assert call(client, "POST", "/feedback/responses", body).status_code == 201
    assert [(f.rating, f.body) for f in feedback_for(alice.responses[0])] == [("thumbs_up", body)]
    assert feedback_for(alice.responses[1]) == []
