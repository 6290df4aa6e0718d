"""A local stand-in for the MKA1 endpoints Multichannel uses.

It speaks MKA1's wire format (OpenAI-Responses-style JSON), keeps conversations and
stored responses per API key and `X-On-Behalf-Of` user, refuses a second concurrent turn
on one conversation like MKA1 does, answers deterministically (it restates the input),
and can be told to misbehave through `SandboxFault` rows (see `faults.py`).
"""

import json
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from multichannel.mka1 import is_response_id
from multichannel.sandbox.mka1_api import (
    Caller,
    by_method,
    error_answer,
    json_answer,
    json_body,
    mka1_endpoint,
    new_id,
    not_found,
)
from multichannel.sandbox.mka1_input import InputError, media_descriptions, turn_input
from multichannel.sandbox.models import SandboxConversation, SandboxItem, SandboxResponse

LOCK_SECONDS = 60


def _owned_conversation(caller: Caller, conversation_id: str) -> SandboxConversation | None:
    # A deleted conversation is gone for the API, though its row (and items) stay.
    return SandboxConversation.objects.filter(
        id=conversation_id, deleted_at__isnull=True, **caller.owner
    ).first()


@require_http_methods(["POST"])
@mka1_endpoint("conversations.create")
def conversations_create(request: HttpRequest, caller: Caller) -> HttpResponse:
    body = json_body(request)
    if isinstance(body, HttpResponse):
        return body
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return error_answer(400, "metadata must be an object", "invalid_request_error", "metadata")
    payload: dict[str, Any] = {
        "id": new_id("conv"),
        "object": "conversation",
        "created_at": int(time.time()),
        "deleted_at": None,
        "metadata": metadata or {},
    }
    SandboxConversation.objects.create(
        id=payload["id"], owner_key=caller.key, owner_user=caller.user, body=payload
    )
    return json_answer(payload)


@require_http_methods(["POST"])
@mka1_endpoint("responses.create")
def responses_create(request: HttpRequest, caller: Caller) -> HttpResponse:
    body = json_body(request)
    if isinstance(body, HttpResponse):
        return body
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error_answer(400, "model is required", "invalid_request_error", "model")
    try:
        turn = turn_input(body.get("input"), caller.owner)
    except InputError as exc:
        if exc.status == 404:
            return error_answer(404, str(exc), "not_found")
        return error_answer(400, str(exc), "invalid_request_error", "input")
    if body.get("stream"):
        return error_answer(400, "The sandbox does not stream", "invalid_request_error", "stream")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        return error_answer(400, "metadata values must be strings", "invalid_request_error")
    conversation_ref = body.get("conversation")
    if isinstance(conversation_ref, dict):
        conversation_ref = conversation_ref.get("id")
    previous_id = body.get("previous_response_id")
    if conversation_ref and previous_id and settings.SANDBOX_MKA1_REFUSE_BOTH:
        return error_answer(
            400,
            "conversation and previous_response_id cannot be used together",
            "invalid_request_error",
            "mutually_exclusive_parameters",
        )
    conversation = None
    if conversation_ref:
        conversation = _owned_conversation(caller, str(conversation_ref))
        if conversation is None:
            return error_answer(404, f"Conversation {conversation_ref} not found", "not_found")
    previous = None
    if previous_id:
        previous = SandboxResponse.objects.filter(
            id=previous_id, owner_key=caller.key, owner_user=caller.user
        ).first()
        if previous is None:
            return error_answer(404, f"Previous response {previous_id} not found", "not_found")
        if conversation is None and previous.conversation_id:
            # Chaining by previous_response_id alone stays in the previous conversation.
            conversation = _owned_conversation(caller, previous.conversation_id)

    if conversation is not None and not _lock(conversation):
        return error_answer(
            409,
            f"Conversation {conversation.id} is locked by another in-progress response",
            "conflict",
            "conversation_locked",
        )
    store = body.get("store", True) is not False
    try:
        payload = _response_payload(
            model=model,
            text=turn.text,
            answer=reply_text(turn.text) + media_descriptions(turn),
            metadata=metadata,
            previous_id=previous_id,
            conversation_id=conversation.id if conversation else None,
            store=store,
        )
        raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        with transaction.atomic():
            if store:
                SandboxResponse.objects.create(
                    id=payload["id"],
                    owner_key=caller.key,
                    owner_user=caller.user,
                    conversation_id=conversation.id if conversation else None,
                    raw=raw,
                )
            if conversation is not None:
                _append_items(
                    conversation, payload["id"], turn.messages, payload["output"][0], metadata
                )
    finally:
        if conversation is not None:
            _unlock(conversation)
    return HttpResponse(raw, content_type="application/json")


def _lock(conversation: SandboxConversation) -> bool:
    now = timezone.now()
    taken = SandboxConversation.objects.filter(
        Q(locked_until__isnull=True) | Q(locked_until__lt=now), pk=conversation.pk
    ).update(locked_until=now + timedelta(seconds=LOCK_SECONDS))
    return taken == 1


def _unlock(conversation: SandboxConversation) -> None:
    SandboxConversation.objects.filter(pk=conversation.pk).update(locked_until=None)


def _append_items(
    conversation: SandboxConversation,
    response_id: str,
    messages: list[tuple[str, list[dict[str, Any]]]],
    output: dict[str, Any],
    metadata: dict[str, str],
) -> None:
    # One item per input message, as sent, then the answer.
    inputs: list[dict[str, Any]] = [
        {
            "type": "message",
            "id": new_id("msg"),
            "status": "completed",
            "role": role,
            "content": content,
        }
        for role, content in messages
    ]
    for item in (*inputs, output):
        SandboxItem.objects.create(
            item_id=item["id"],
            conversation=conversation,
            response_id=response_id,
            # MKA1 stamps each item with the response that made it and that response's
            # metadata (so `metadata.channel` says which channel a turn came from).
            body={**item, "response_id": response_id, "metadata": metadata},
        )


def reply_text(text: str) -> str:
    """The sandbox's deterministic answer."""
    return f"You said: {text}"


def _response_payload(
    *,
    model: str,
    text: str,
    answer: str,
    metadata: dict[str, str],
    previous_id: str | None,
    conversation_id: str | None,
    store: bool,
) -> dict[str, Any]:
    now = int(time.time())
    input_tokens = max(1, len(text.split()))
    output_tokens = max(1, len(answer.split()))
    payload: dict[str, Any] = {
        "id": new_id("resp"),
        "object": "response",
        "created_at": now,
        "completed_at": now,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "background": False,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "metadata": metadata,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": new_id("msg"),
                "role": "assistant",
                "content": [{"type": "output_text", "text": answer, "annotations": []}],
                "status": "completed",
            }
        ],
        "output_text": answer,
        "parallel_tool_calls": True,
        "previous_response_id": previous_id,
    }
    if conversation_id is not None:
        payload["conversation"] = {"id": conversation_id}
    payload.update(
        {
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "auto",
            "store": store,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "truncation": "disabled",
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
            "user": None,
        }
    )
    return payload


@require_http_methods(["GET"])
@mka1_endpoint("responses.get")
def responses_get(request: HttpRequest, caller: Caller, response_id: str) -> HttpResponse:
    if not is_response_id(response_id):
        return error_answer(400, "Invalid response id", "invalid_request_error", "response_id")
    stored = SandboxResponse.objects.filter(
        id=response_id, owner_key=caller.key, owner_user=caller.user
    ).first()
    if stored is None:
        # Another user's response is "not found", exactly like one that never existed.
        return error_answer(404, f"Response {response_id} not found", "not_found")
    return HttpResponse(stored.raw, content_type="application/json")


@require_http_methods(["GET"])
@mka1_endpoint("conversations.items.list")
def conversation_items_list(
    request: HttpRequest, caller: Caller, conversation_id: str
) -> HttpResponse:
    conversation = _owned_conversation(caller, conversation_id)
    if conversation is None:
        return error_answer(404, f"Conversation {conversation_id} not found", "not_found")
    try:
        limit = int(request.GET.get("limit", "20"))
    except ValueError:
        return error_answer(400, "limit must be an integer", "invalid_request_error", "limit")
    if not 1 <= limit <= 100:
        return error_answer(
            400, "limit must be between 1 and 100", "invalid_request_error", "limit"
        )
    order = request.GET.get("order", "asc")  # MKA1's default, unlike OpenAI's
    if order not in ("asc", "desc"):
        return error_answer(400, "order must be asc or desc", "invalid_request_error", "order")
    items = conversation.items.order_by("id" if order == "asc" else "-id")
    after = request.GET.get("after")
    if after:
        anchor = conversation.items.filter(item_id=after).first()
        if anchor is None:
            return error_answer(404, f"Item {after} not found", "not_found")
        items = items.filter(id__gt=anchor.pk) if order == "asc" else items.filter(id__lt=anchor.pk)
    page = list(items[: limit + 1])
    data = [item.body for item in page[:limit]]
    # Exactly MKA1's list shape: no first_id, and last_id is always a string (the SDK
    # rejects null), so an empty page carries "".
    return json_answer(
        {
            "object": "list",
            "data": data,
            "has_more": len(page) > limit,
            "last_id": data[-1]["id"] if data else "",
        }
    )


@require_http_methods(["GET"])
@mka1_endpoint("conversations.items.get")
def conversation_item_get(
    request: HttpRequest, caller: Caller, conversation_id: str, item_id: str
) -> HttpResponse:
    conversation = _owned_conversation(caller, conversation_id)
    item = conversation.items.filter(item_id=item_id).first() if conversation else None
    if item is None:
        return error_answer(404, f"Item {item_id} not found", "not_found")
    return json_answer(item.body)


# --- deletes (what an erasure calls) -------------------------------------------------


@mka1_endpoint("responses.delete")
def responses_delete(request: HttpRequest, caller: Caller, response_id: str) -> HttpResponse:
    if not is_response_id(response_id):
        return error_answer(400, "Invalid response id", "invalid_request_error", "response_id")
    # The conversation's items stay: MKA1 deletes the stored response only.
    deleted, _ = SandboxResponse.objects.filter(id=response_id, **caller.owner).delete()
    if not deleted:
        return not_found(f"Response {response_id}")
    return json_answer({"id": response_id, "object": "response", "deleted": True})


@mka1_endpoint("conversations.get")
def conversations_get(request: HttpRequest, caller: Caller, conversation_id: str) -> HttpResponse:
    conversation = _owned_conversation(caller, conversation_id)
    if conversation is None:
        return not_found(f"Conversation {conversation_id}")
    return json_answer(conversation.body)


@mka1_endpoint("conversations.delete")
def conversations_delete(
    request: HttpRequest, caller: Caller, conversation_id: str
) -> HttpResponse:
    # As at MKA1, the items are not deleted with it: they stay, unreachable, unless an
    # erasure deleted each of them first.
    deleted = SandboxConversation.objects.filter(
        id=conversation_id, deleted_at__isnull=True, **caller.owner
    ).update(deleted_at=timezone.now())
    if not deleted:
        return not_found(f"Conversation {conversation_id}")
    return json_answer({"id": conversation_id, "object": "conversation.deleted", "deleted": True})


@mka1_endpoint("conversations.items.delete")
def conversation_item_delete(
    request: HttpRequest, caller: Caller, conversation_id: str, item_id: str
) -> HttpResponse:
    conversation = _owned_conversation(caller, conversation_id)
    deleted = conversation.items.filter(item_id=item_id).delete()[0] if conversation else 0
    if conversation is None or not deleted:
        return not_found(f"Item {item_id}")
    # MKA1 answers with the conversation the item was removed from.
    return json_answer(conversation.body)


response_detail = by_method(GET=responses_get, DELETE=responses_delete)
conversation_detail = by_method(GET=conversations_get, DELETE=conversations_delete)
conversation_item_detail = by_method(GET=conversation_item_get, DELETE=conversation_item_delete)
