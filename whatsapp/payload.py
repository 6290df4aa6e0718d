"""Reading Meta's webhook payloads defensively: every entry, change, message and
status; anything of an unexpected shape is skipped (the raw body is kept anyway)."""

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

STATUS_VALUES = ("sent", "delivered", "read", "failed")
MEDIA_TYPES = ("audio", "image", "document")
PREFERENCE_VALUES = ("stop", "resume")
# The lengths of the columns these ids are stored in (whatsapp.models). A longer id is
# not one Meta sends: it is treated as absent rather than failing the whole delivery.
WAMID_MAX = 255
WA_ID_MAX = 32
BSUID_MAX = 128
PHONE_NUMBER_ID_MAX = 64
MEDIA_ID_MAX = 255
# Deeper than any Meta payload, and far from Python's recursion limit when the ORM
# serializes a message's raw JSON.
MAX_DEPTH = 32
# PostgreSQL stores no NUL character in text or JSON, and no database stores a lone
# surrogate (which json.loads accepts, from an escape such as "\ud800").
UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class IncomingMedia:
    """A voice note, photo or document: WhatsApp sends its id, never its bytes."""

    id: str
    mime_type: str
    sha256: str
    caption: str
    filename: str
    voice: bool


@dataclass(frozen=True)
class IncomingMessage:
    wamid: str
    wa_id: str | None
    bsuid: str | None
    type: str
    text: str
    sent_at: datetime
    phone_number_id: str
    raw: dict[str, Any]
    media: IncomingMedia | None = None
    # A reaction: the message reacted to, and the emoji ("" when it was removed).
    reaction: tuple[str, str] | None = None


@dataclass(frozen=True)
class PreferenceUpdate:
    """Meta's `user_preferences` webhook: the user stopped or resumed messages."""

    wa_id: str | None
    bsuid: str | None
    value: str  # "stop" or "resume"
    at: datetime


@dataclass(frozen=True)
class StatusUpdate:
    wamid: str
    status: str
    at: datetime
    errors: list[Any]


@dataclass(frozen=True)
class ParsedWebhook:
    object: str
    messages: list[IncomingMessage]
    statuses: list[StatusUpdate]
    preferences: list[PreferenceUpdate] = field(default_factory=list)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _id(value: Any, max_length: int) -> str | None:
    text = _str(value)
    return text if text is not None and len(text) <= max_length else None


def storable(value: Any, depth: int = 0) -> Any:
    """The JSON value as every supported database can store it: unstorable characters
    replaced (U+FFFD), NaN and Infinity (which json.loads accepts) and anything nested
    deeper than MAX_DEPTH replaced by null. Meta's own payloads come through unchanged."""
    if isinstance(value, str):
        return UNSTORABLE_CHARACTER.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {storable(key): storable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item, depth + 1) for item in value]
    return value


def _when(value: Any, fallback: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return fallback


def parse_webhook(payload: dict[str, Any], *, received_at: datetime) -> ParsedWebhook:
    messages: list[IncomingMessage] = []
    statuses: list[StatusUpdate] = []
    preferences: list[PreferenceUpdate] = []
    payload = storable(payload)
    obj = _str(payload.get("object")) or ""
    if obj != "whatsapp_business_account":
        return ParsedWebhook(obj, messages, statuses)
    for entry in _list(payload.get("entry")):
        for change in _list(_dict(entry).get("changes")):
            change = _dict(change)
            if change.get("field") == "user_preferences":
                value = _dict(change.get("value"))
                for raw in _list(value.get("user_preferences")):
                    preference = _preference(_dict(raw), received_at)
                    if preference is not None:
                        preferences.append(preference)
                continue
            if change.get("field") != "messages":
                continue
            value = _dict(change.get("value"))
            metadata = _dict(value.get("metadata"))
            phone_number_id = _id(metadata.get("phone_number_id"), PHONE_NUMBER_ID_MAX) or ""
            contacts = [_dict(c) for c in _list(value.get("contacts"))]
            for raw in _list(value.get("messages")):
                message = _message(_dict(raw), contacts, phone_number_id, received_at)
                if message is not None:
                    messages.append(message)
            for raw in _list(value.get("statuses")):
                status = _status(_dict(raw), received_at)
                if status is not None:
                    statuses.append(status)
    return ParsedWebhook(obj, messages, statuses, preferences)


def _message(
    raw: dict[str, Any], contacts: list[dict[str, Any]], phone_number_id: str, now: datetime
) -> IncomingMessage | None:
    wamid = _id(raw.get("id"), WAMID_MAX)
    wa_id = _id(raw.get("from"), WA_ID_MAX)
    # Since 2026 a sender may come with a business-scoped user id and no phone number.
    bsuid = _id(raw.get("from_user_id"), BSUID_MAX)
    if bsuid is None or wa_id is None:
        # A contact completes the sender's ids only if it is this sender's: one naming
        # someone else (a forwarded or shared contact) must never bind their id to ours.
        contact = _contact_for(contacts, wa_id=wa_id, bsuid=bsuid)
        wa_id = wa_id or _id(contact.get("wa_id"), WA_ID_MAX)
        bsuid = bsuid or _id(contact.get("user_id"), BSUID_MAX)
    if wamid is None or (wa_id is None and bsuid is None):
        return None
    kind = _str(raw.get("type")) or "unknown"
    text = ""
    media = reaction = None
    if kind == "text":
        body = _dict(raw.get("text")).get("body")
        text = body if isinstance(body, str) else ""
    elif kind in MEDIA_TYPES:
        media = _media(_dict(raw.get(kind)))
        text = media.caption if media else ""
    elif kind == "reaction":
        reacted = _dict(raw.get("reaction"))
        target = _id(reacted.get("message_id"), WAMID_MAX)
        emoji = reacted.get("emoji")
        if target is not None:
            reaction = (target, emoji if isinstance(emoji, str) else "")
    return IncomingMessage(
        wamid=wamid,
        wa_id=wa_id,
        bsuid=bsuid,
        type=kind,
        text=text,
        sent_at=_when(raw.get("timestamp"), now),
        phone_number_id=phone_number_id,
        raw=raw,
        media=media,
        reaction=reaction,
    )


def _media(raw: dict[str, Any]) -> IncomingMedia | None:
    media_id = _id(raw.get("id"), MEDIA_ID_MAX)
    if media_id is None:
        return None  # nothing to fetch: answered as an unsupported message
    caption, filename = raw.get("caption"), raw.get("filename")
    return IncomingMedia(
        id=media_id,
        mime_type=(_str(raw.get("mime_type")) or "application/octet-stream")[:128],
        sha256=(_str(raw.get("sha256")) or "")[:64],
        caption=caption if isinstance(caption, str) else "",
        filename=(filename if isinstance(filename, str) else "")[:255],
        voice=raw.get("voice") is True,
    )


def _preference(raw: dict[str, Any], now: datetime) -> PreferenceUpdate | None:
    value = _str(raw.get("value"))
    wa_id = _id(raw.get("wa_id"), WA_ID_MAX)
    bsuid = _id(raw.get("user_id"), BSUID_MAX)
    if value not in PREFERENCE_VALUES or (wa_id is None and bsuid is None):
        return None
    return PreferenceUpdate(
        wa_id=wa_id, bsuid=bsuid, value=value, at=_when(raw.get("timestamp"), now)
    )


def _contact_for(
    contacts: list[dict[str, Any]], *, wa_id: str | None, bsuid: str | None
) -> dict[str, Any]:
    for contact in contacts:
        if (wa_id and contact.get("wa_id") == wa_id) or (bsuid and contact.get("user_id") == bsuid):
            return contact
    # Only a message that names no sender at all takes the single contact beside it.
    if wa_id is None and bsuid is None and len(contacts) == 1:
        return contacts[0]
    return {}


def _status(raw: dict[str, Any], now: datetime) -> StatusUpdate | None:
    wamid = _id(raw.get("id"), WAMID_MAX)
    status = _str(raw.get("status"))
    if wamid is None or status not in STATUS_VALUES:
        return None
    return StatusUpdate(
        wamid=wamid,
        status=status,
        at=_when(raw.get("timestamp"), now),
        errors=_list(raw.get("errors")),
    )
