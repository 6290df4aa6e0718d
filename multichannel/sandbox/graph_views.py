"""A local stand-in for the WhatsApp Cloud API messages endpoint: it records what the
business sent (replies and read receipts) and answers like the Graph API does."""

import json
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from multichannel.sandbox.faults import fault_take
from multichannel.sandbox.models import SandboxGraphMessage
from multichannel.sandbox.whatsapp import wamid

TEXT_LIMIT = 4096


def _json(payload: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(payload), status=status, content_type="application/json")


def _error(status: int, code: int, message: str) -> HttpResponse:
    return _json(
        {
            "error": {
                "message": message,
                "type": "OAuthException",
                "code": code,
                "fbtrace_id": "sbx",
            }
        },
        status,
    )


@csrf_exempt
@require_http_methods(["POST"])
def messages(request: HttpRequest, version: str, phone_number_id: str) -> HttpResponse:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        return _error(401, 190, "Invalid OAuth access token")
    fault = fault_take("graph.messages")
    if fault is not None and fault.status:
        body = fault.payload or {"error": {"message": "Injected failure", "code": 131000}}
        return _json(body, fault.status)
    try:
        body = json.loads(request.body)
    except ValueError:
        return _error(400, 100, "Invalid JSON")
    if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
        return _error(400, 100, "messaging_product must be whatsapp")
    if body.get("status") == "read":
        if not isinstance(body.get("message_id"), str):
            return _error(400, 100, "message_id is required")
        SandboxGraphMessage.objects.create(
            phone_number_id=phone_number_id, kind="read", recipient="", body=body
        )
        return _json({"success": True})
    recipient = body.get("to") or body.get("recipient")
    if not isinstance(recipient, str) or not recipient:
        return _error(400, 100, "to or recipient is required")
    if body.get("type") != "text":
        return _error(400, 100, "the sandbox sends text messages only")
    text = body.get("text", {}).get("body") if isinstance(body.get("text"), dict) else None
    if not isinstance(text, str) or not text:
        return _error(400, 100, "text.body is required")
    if len(text) > TEXT_LIMIT:
        return _error(400, 100, f"text.body is longer than {TEXT_LIMIT} characters")
    message_id = wamid()
    SandboxGraphMessage.objects.create(
        phone_number_id=phone_number_id,
        kind="text",
        recipient=recipient,
        wamid=message_id,
        body=body,
    )
    contact = {"input": recipient}
    if "to" in body:
        contact["wa_id"] = recipient
    return _json(
        {"messaging_product": "whatsapp", "contacts": [contact], "messages": [{"id": message_id}]}
    )
