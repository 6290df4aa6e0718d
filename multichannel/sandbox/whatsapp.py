"""Playing Meta's side of WhatsApp locally: payloads shaped like the Cloud API's
webhooks, signed the way Meta signs them."""

import hashlib
import hmac
import json
import secrets
import time
from typing import Any


def wamid() -> str:
    return f"wamid.SANDBOX{secrets.token_hex(16).upper()}"


def sign(body: bytes, app_secret: str) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_headers(body: bytes, app_secret: str) -> dict[str, str]:
    """The headers Meta posts a webhook body with."""
    return {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, app_secret)}


def message_event(
    *,
    wa_id: str | None = "15551234567",
    bsuid: str | None = None,
    text: str | None = "Hello",
    message_type: str = "text",
    message_id: str | None = None,
    timestamp: int | None = None,
    name: str = "Sandbox User",
) -> dict[str, Any]:
    """One entry of `value.messages` (with its contact) as Meta sends it."""
    message: dict[str, Any] = {}
    if wa_id:
        message["from"] = wa_id
    if bsuid:
        message["from_user_id"] = bsuid
    message["id"] = message_id or wamid()
    message["timestamp"] = str(timestamp if timestamp is not None else int(time.time()))
    message["type"] = message_type
    if message_type == "text":
        message["text"] = {"body": text or ""}
    elif message_type in ("image", "audio", "video", "document", "sticker"):
        message[message_type] = {
            "id": secrets.token_hex(8),
            "mime_type": "application/octet-stream",
        }
    elif message_type == "location":
        message["location"] = {"latitude": 52.52, "longitude": 13.405}
    elif message_type == "reaction":
        message["reaction"] = {"message_id": wamid(), "emoji": "\U0001f44d"}
    contact: dict[str, Any] = {"profile": {"name": name}}
    if wa_id:
        contact["wa_id"] = wa_id
    if bsuid:
        contact["user_id"] = bsuid
    return {"message": message, "contact": contact}


def webhook_payload(
    events: list[dict[str, Any]] | None = None,
    *,
    statuses: list[dict[str, Any]] | None = None,
    phone_number_id: str = "100000000000001",
) -> dict[str, Any]:
    """A `whatsapp_business_account` webhook carrying the given messages and statuses."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": phone_number_id},
    }
    if events:
        value["contacts"] = [event["contact"] for event in events]
        value["messages"] = [event["message"] for event in events]
    if statuses:
        value["statuses"] = statuses
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "100000000000000", "changes": [{"value": value, "field": "messages"}]}],
    }


def status_event(
    message_id: str,
    status: str,
    *,
    recipient_id: str = "15551234567",
    timestamp: int | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": message_id,
        "status": status,
        "timestamp": str(timestamp if timestamp is not None else int(time.time())),
        "recipient_id": recipient_id,
    }
    if errors:
        event["errors"] = errors
    return event


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()
