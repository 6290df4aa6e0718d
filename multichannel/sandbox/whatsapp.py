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


MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")


def message_event(
    *,
    wa_id: str | None = "15551234567",
    bsuid: str | None = None,
    text: str | None = "Hello",
    message_type: str = "text",
    message_id: str | None = None,
    timestamp: int | None = None,
    name: str = "Sandbox User",
    media: dict[str, Any] | None = None,
    reaction: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One entry of `value.messages` (with its contact) as Meta sends it. `media` is the
    object of an image/audio/document/... message (see `media_object`; without it, a
    placeholder nobody can download), `reaction` that of a reaction (see
    `reaction_event`)."""
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
    elif message_type in MEDIA_TYPES:
        message[message_type] = media or {
            "id": secrets.token_hex(8),
            "mime_type": "application/octet-stream",
        }
    elif message_type == "location":
        message["location"] = {"latitude": 52.52, "longitude": 13.405}
    elif message_type == "reaction":
        message["reaction"] = reaction or {"message_id": wamid(), "emoji": "\U0001f44d"}
    contact: dict[str, Any] = {"profile": {"name": name}}
    if wa_id:
        contact["wa_id"] = wa_id
    if bsuid:
        contact["user_id"] = bsuid
    return {"message": message, "contact": contact}


def media_object(
    message_type: str,
    *,
    media_id: str,
    mime_type: str,
    sha256: str,
    caption: str | None = None,
    filename: str | None = None,
    voice: bool | None = None,
) -> dict[str, Any]:
    """The `image` / `document` / `audio` / ... object of a media message, as Meta sends
    it: `{id, mime_type, sha256}` (hex, as the media endpoint reports it), plus `caption`
    (image, video, document), `filename` (document) and `voice` (audio)."""
    if message_type not in MEDIA_TYPES:
        raise ValueError(f"{message_type!r} is not a media message type")
    media: dict[str, Any] = {}
    if caption is not None and message_type in ("image", "video", "document"):
        media["caption"] = caption
    if message_type == "document":
        media["filename"] = filename or "document"
    media.update({"mime_type": mime_type, "sha256": sha256, "id": media_id})
    if message_type == "audio":
        media["voice"] = bool(voice)
    return media


def media_event(
    message_type: str,
    *,
    media_id: str,
    mime_type: str,
    sha256: str,
    caption: str | None = None,
    filename: str | None = None,
    voice: bool | None = None,
    **event: Any,
) -> dict[str, Any]:
    """A media message (with its contact) for media the Graph API stand-in holds (its
    id, mime type and sha256 as the upload reported them). `event` takes
    `message_event`'s other keywords (wa_id, message_id, timestamp...)."""
    media = media_object(
        message_type,
        media_id=media_id,
        mime_type=mime_type,
        sha256=sha256,
        caption=caption,
        filename=filename,
        voice=voice,
    )
    return message_event(message_type=message_type, text=None, media=media, **event)


def reaction_event(message_id: str, emoji: str, **event: Any) -> dict[str, Any]:
    """A reaction of the user to one of our messages (`message_id`, a wamid). An empty
    `emoji` is the user taking a reaction back: Meta then leaves `emoji` out."""
    reaction: dict[str, Any] = {"message_id": message_id}
    if emoji:
        reaction["emoji"] = emoji
    return message_event(message_type="reaction", text=None, reaction=reaction, **event)


def user_preferences_payload(
    wa_id: str,
    value: str,
    *,
    name: str = "Sandbox User",
    timestamp: int | None = None,
    phone_number_id: str = "100000000000001",
) -> dict[str, Any]:
    """The `user_preferences` webhook Meta sends when a user stops ("stop") or resumes
    ("resume") marketing messages, in the shape of Meta's webhook reference: a change
    with `field: "user_preferences"` whose value lists `{wa_id, detail, category:
    "marketing_messages", value, timestamp}` (timestamp an integer, unlike messages')."""
    if value not in ("stop", "resume"):
        raise ValueError("value must be stop or resume")
    preference = {
        "wa_id": wa_id,
        "detail": f"User requested to {value} marketing messages",
        "category": "marketing_messages",
        "value": value,
        "timestamp": timestamp if timestamp is not None else int(time.time()),
    }
    change_value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": phone_number_id},
        "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
        "user_preferences": [preference],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "100000000000000",
                "changes": [{"value": change_value, "field": "user_preferences"}],
            }
        ],
    }


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
