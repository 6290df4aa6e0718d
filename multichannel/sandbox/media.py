"""Putting media where Meta would hold it: uploads to the Graph API stand-in, the way a
business uploads (`POST /{version}/{phone-number-id}/media`), so a webhook can name it
and the product can fetch it by id. In process (`sandbox://graph`) or over HTTP."""

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import requests
from django.conf import settings

from multichannel.sandbox import whatsapp as wa
from multichannel.sandbox.transport import InProcessAdapter


@dataclass(frozen=True)
class UploadedMedia:
    id: str
    mime_type: str
    sha256: str  # hex
    file_size: int
    filename: str


class MediaUploadError(Exception):
    pass


def mime_type_of(filename: str, default: str = "application/octet-stream") -> str:
    return mimetypes.guess_type(filename)[0] or default


def media_kind(mime_type: str) -> str:
    """The WhatsApp message type a file of this type is sent as."""
    major = mime_type.split("/", 1)[0]
    return {"image": "image", "audio": "audio", "video": "video"}.get(major, "document")


def media_upload(
    data: bytes,
    *,
    mime_type: str,
    filename: str = "",
    graph_url: str = "sandbox://graph",
    timeout: float = 30,
) -> UploadedMedia:
    """Upload `data` to the Graph API stand-in at `graph_url` (e.g.
    http://127.0.0.1:8000/sandbox/graph); what the webhook of a message carrying it says."""
    session = requests.Session()
    session.trust_env = False
    session.mount("sandbox://", InProcessAdapter())
    url = (
        f"{graph_url.rstrip('/')}/{settings.WHATSAPP_GRAPH_VERSION}/"
        f"{settings.WHATSAPP_PHONE_NUMBER_ID}/media"
    )
    try:
        answer = session.post(
            url,
            data={"messaging_product": "whatsapp", "type": mime_type},
            files={"file": (filename or "file", data, mime_type)},
            headers={"Authorization": f"Bearer {settings.WHATSAPP_TOKEN or 'sandbox'}"},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        raise MediaUploadError(f"could not reach {graph_url}: {exc}") from exc
    if answer.status_code != 200:
        raise MediaUploadError(f"the media upload answered {answer.status_code}: {answer.text}")
    return UploadedMedia(
        id=str(answer.json()["id"]),
        mime_type=mime_type,
        sha256=hashlib.sha256(data).hexdigest(),
        file_size=len(data),
        filename=filename,
    )


def media_message_event(
    uploaded: UploadedMedia,
    *,
    message_type: str | None = None,
    caption: str | None = None,
    voice: bool = False,
    **event: Any,
) -> dict[str, Any]:
    """The webhook message (with its contact) of a user sending uploaded media; the
    type follows the media's MIME type unless given."""
    kind = message_type or media_kind(uploaded.mime_type)
    return wa.media_event(
        kind,
        media_id=uploaded.id,
        mime_type=uploaded.mime_type,
        sha256=uploaded.sha256,
        caption=caption or None,
        filename=PurePath(uploaded.filename).name or None,
        voice=voice if kind == "audio" else None,
        **event,
    )
