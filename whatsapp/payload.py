"""Reading Meta's webhook payloads defensively: every entry, change, message and
status; anything of an unexpected shape is skipped (the raw body is kept anyway)."""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

STATUS_VALUES = ("sent", "delivered", "read", "failed")


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


def _when(value: Any, fallback: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return fallback


def parse_webhook(payload: dict[str, Any], *, received_at: datetime) -> ParsedWebhook:
    messages: list[IncomingMessage] = []
    statuses: list[StatusUpdate] = []
    obj = _str(payload.get("object")) or ""
    if obj != "whatsapp_business_account":
        return ParsedWebhook(obj, messages, statuses)
    for entry in _list(payload.get("entry")):
        for change in _list(_dict(entry).get("changes")):
            change = _dict(change)
            if change.get("field") != "messages":
                continue
            value = _dict(change.get("value"))
            phone_number_id = _str(_dict(value.get("metadata")).get("phone_number_id")) or ""
            contacts = [_dict(c) for c in _list(value.get("contacts"))]
            for raw in _list(value.get("messages")):
                message = _message(_dict(raw), contacts, phone_number_id, received_at)
                if message is not None:
                    messages.append(message)
            for raw in _list(value.get("statuses")):
                status = _status(_dict(raw), received_at)
                if status is not None:
                    statuses.append(status)
    return ParsedWebhook(obj, messages, statuses)


def _message(
    raw: dict[str, Any], contacts: list[dict[str, Any]], phone_number_id: str, now: datetime
) -> IncomingMessage | None:
    wamid = _str(raw.get("id"))
    wa_id = _str(raw.get("from"))
    # Since 2026 a sender may come with a business-scoped user id and no phone number.
    bsuid = _str(raw.get("from_user_id"))
    if bsuid is None or wa_id is None:
        contact = _contact_for(contacts, wa_id=wa_id, bsuid=bsuid)
        wa_id = wa_id or _str(contact.get("wa_id"))
        bsuid = bsuid or _str(contact.get("user_id"))
    if wamid is None or (wa_id is None and bsuid is None):
        return None
    kind = _str(raw.get("type")) or "unknown"
    text = ""
    if kind == "text":
        body = _dict(raw.get("text")).get("body")
        text = body if isinstance(body, str) else ""
    return IncomingMessage(
        wamid=wamid,
        wa_id=wa_id,
        bsuid=bsuid,
        type=kind,
        text=text,
        sent_at=_when(raw.get("timestamp"), now),
        phone_number_id=phone_number_id,
        raw=raw,
    )


def _contact_for(
    contacts: list[dict[str, Any]], *, wa_id: str | None, bsuid: str | None
) -> dict[str, Any]:
    for contact in contacts:
        if (wa_id and contact.get("wa_id") == wa_id) or (bsuid and contact.get("user_id") == bsuid):
            return contact
    # A single contact with a single message is the common, unambiguous case.
    return contacts[0] if len(contacts) == 1 else {}


def _status(raw: dict[str, Any], now: datetime) -> StatusUpdate | None:
    wamid = _str(raw.get("id"))
    status = _str(raw.get("status"))
    if wamid is None or status not in STATUS_VALUES:
        return None
    return StatusUpdate(
        wamid=wamid,
        status=status,
        at=_when(raw.get("timestamp"), now),
        errors=_list(raw.get("errors")),
    )
