"""The fake MKA1 server of the client tests: its address and key, the answers it gives,
and checks on the requests it receives. HTTP is faked with `responses` (the `mocked`,
`delays` and `make_client` fixtures are in tests/conftest.py)."""

import json
import re
import socket
from collections.abc import Callable
from typing import Any

import requests
from pydantic import BaseModel
from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError, ProtocolError

from multichannel import mka1
from multichannel.mka1 import Mka1Client

BASE = "https://mka1.test"
API = f"{BASE}/api/v1/llm"
KEY = "test-mka1-key-not-real"
USER = "end-user-42"
MODEL = "meetkai:test-model"
RESPONSE = {"id": "resp_abc123", "object": "response", "output": [], "output_text": "hi"}
ANY_URL = re.compile(r"https://mka1\.test/.*")

MakeClient = Callable[..., Mka1Client]


def mka1_error(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def refused() -> requests.ConnectionError:
    # The shape requests gives for ECONNREFUSED: ConnectionError(MaxRetryError(reason=...)).
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] refused")  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, "/api", reason))  # type: ignore[arg-type]


def unresolved() -> requests.ConnectionError:
    reason = NameResolutionError("mka1.test", None, socket.gaierror(-2, "Name unknown"))  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, "/api", reason))  # type: ignore[arg-type]


def lost() -> requests.ConnectionError:
    # The shape requests gives when the peer resets a connection after the request went out.
    return requests.ConnectionError(
        ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    )


def sent_json(call: Any) -> dict[str, Any]:
    body = call.request.body
    assert isinstance(body, bytes)
    parsed = json.loads(body)
    assert isinstance(parsed, dict)
    return parsed


def sent_timeout(call: Any) -> Any:
    # `responses` records the keyword arguments the session passed to the adapter.
    return call.request.req_kwargs["timeout"]


def assert_sdk_request(model: type[BaseModel], body: dict[str, Any]) -> Any:
    """Valid for the official SDK model, and no key the model does not know (it ignores extras)."""
    validated = model.model_validate(body)
    known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    assert set(body) <= known, f"keys unknown to {model.__name__}: {set(body) - known}"
    return validated


def create_response(client: Mka1Client, previous: str | None = "resp_prev1") -> mka1.Mka1Object:
    return client.create_response(
        USER,
        conversation_id="conv_1",
        message="hello",
        previous_response_id=previous,
        channel="whatsapp",
    )


# Every call of the client: (name, method, path and query, how to make it).
CALLS: list[tuple[str, str, str, Callable[[Mka1Client], object]]] = [
    (
        "create_conversation",
        "POST",
        "/api/v1/llm/conversations",
        lambda c: c.create_conversation(USER),
    ),
    ("create_response", "POST", "/api/v1/llm/responses", create_response),
    (
        "get_response",
        "GET",
        "/api/v1/llm/responses/resp_abc123",
        lambda c: c.get_response(USER, "resp_abc123"),
    ),
    (
        "get_conversation_item",
        "GET",
        "/api/v1/llm/conversations/conv_1/items/msg_9",
        lambda c: c.get_conversation_item(USER, "conv_1", "msg_9"),
    ),
    (
        "list_conversation_items",
        "GET",
        "/api/v1/llm/conversations/conv_1/items?order=asc",
        lambda c: c.list_conversation_items(USER, "conv_1"),
    ),
    (
        "transcribe",
        "POST",
        "/api/v1/llm/speech/transcriptions",
        lambda c: c.transcribe(USER, filename="v.ogg", content=b"OggS", content_type="audio/ogg"),
    ),
    (
        "upload_file",
        "POST",
        "/api/v1/llm/files",
        lambda c: c.upload_file(USER, filename="a.pdf", content=b"%PDF", content_type="x/y"),
    ),
    (
        "create_feedback",
        "POST",
        "/api/v1/llm/feedback/responses",
        lambda c: c.create_feedback(USER, response_id="resp_abc123", rating="thumbs_up"),
    ),
    (
        "delete_response",
        "DELETE",
        "/api/v1/llm/responses/resp_abc123",
        lambda c: c.delete_response(USER, "resp_abc123"),
    ),
    (
        "delete_conversation_item",
        "DELETE",
        "/api/v1/llm/conversations/conv_1/items/msg_9",
        lambda c: c.delete_conversation_item(USER, "conv_1", "msg_9"),
    ),
    (
        "delete_conversation",
        "DELETE",
        "/api/v1/llm/conversations/conv_1",
        lambda c: c.delete_conversation(USER, "conv_1"),
    ),
    ("delete_file", "DELETE", "/api/v1/llm/files/file-1", lambda c: c.delete_file(USER, "file-1")),
    (
        "list_transcriptions",
        "GET",
        "/api/v1/llm/speech/transcriptions/history?limit=100&order=asc",
        lambda c: c.list_transcriptions(USER),
    ),
    (
        "delete_transcription",
        "DELETE",
        "/api/v1/llm/speech/transcriptions/history/stt_1",
        lambda c: c.delete_transcription(USER, "stt_1"),
    ),
]
# Calls that send a file (multipart/form-data rather than JSON).
MULTIPART_CALLS = ("transcribe", "upload_file")
