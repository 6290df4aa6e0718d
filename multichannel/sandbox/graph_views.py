"""A local stand-in for the WhatsApp Cloud API: the messages endpoint records what the
business sent (replies, templates, read marks, typing indicators) and answers like the
Graph API does; the media endpoints take uploads and serve them by id and by a signed,
short-lived download URL, as Meta serves what a user sent."""

import hashlib
import json
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from multichannel.sandbox.faults import fault_take
from multichannel.sandbox.models import SandboxFault, SandboxGraphMessage, SandboxMedia
from multichannel.sandbox.transport import sandbox_url
from multichannel.sandbox.whatsapp import wamid

TEXT_LIMIT = 4096
# Meta's largest media (documents); per-type limits are the product's business.
MEDIA_LIMIT = 100 * 1024 * 1024
_SIGNING_SALT = "multichannel.sandbox.graph.media-url"


def _json(payload: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(payload), status=status, content_type="application/json")


def _error(status: int, code: int, message: str, kind: str = "OAuthException") -> HttpResponse:
    return _json(
        {"error": {"message": message, "type": kind, "code": code, "fbtrace_id": "sbx"}},
        status,
    )


def _unauthorized(request: HttpRequest) -> HttpResponse | None:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        return _error(401, 190, "Invalid OAuth access token")
    return None


def _planned(name: str) -> tuple[SandboxFault | None, HttpResponse | None]:
    """Take a planned fault for `name`: the fault, and the answer that replaces this
    one (after any planned delay), if it has a status."""
    fault = fault_take(name)
    if fault is None:
        return None, None
    if fault.delay_ms:
        time.sleep(fault.delay_ms / 1000)
    if fault.status:
        body = fault.payload or {"error": {"message": "Injected failure", "code": 131000}}
        return fault, _json(body, fault.status)
    return fault, None


# --- messages ------------------------------------------------------------------------


def _template_error(template: Any) -> str | None:
    if not isinstance(template, dict):
        return "template is required"
    if not isinstance(template.get("name"), str) or not template["name"]:
        return "template.name is required"
    language = template.get("language")
    if not isinstance(language, dict) or not isinstance(language.get("code"), str):
        return "template.language.code is required"
    if not language["code"]:
        return "template.language.code is required"
    if "components" in template and not isinstance(template["components"], list):
        return "template.components must be a list"
    return None


def _status_update(phone_number_id: str, body: dict[str, Any]) -> HttpResponse:
    """A read mark, with or without a typing indicator."""
    if not isinstance(body.get("message_id"), str) or not body["message_id"]:
        return _error(400, 100, "message_id is required")
    kind = "read"
    if "typing_indicator" in body:
        indicator = body["typing_indicator"]
        if not isinstance(indicator, dict) or indicator.get("type") != "text":
            return _error(400, 100, "typing_indicator.type must be text")
        kind = "typing"
    SandboxGraphMessage.objects.create(
        phone_number_id=phone_number_id, kind=kind, recipient="", body=body
    )
    return _json({"success": True})


@csrf_exempt
@require_http_methods(["POST"])
def messages(request: HttpRequest, version: str, phone_number_id: str) -> HttpResponse:
    refused = _unauthorized(request)
    if refused is not None:
        return refused
    _, planned = _planned("graph.messages")
    if planned is not None:
        return planned
    try:
        body = json.loads(request.body)
    except ValueError:
        return _error(400, 100, "Invalid JSON")
    if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
        return _error(400, 100, "messaging_product must be whatsapp")
    if body.get("status") == "read":
        return _status_update(phone_number_id, body)
    recipient = body.get("to") or body.get("recipient")
    if not isinstance(recipient, str) or not recipient:
        return _error(400, 100, "to or recipient is required")
    if "context" in body:
        context = body["context"]
        if not isinstance(context, dict) or not isinstance(context.get("message_id"), str):
            return _error(400, 100, "context.message_id is required")
    kind = body.get("type")
    if kind == "template":
        problem = _template_error(body.get("template"))
        if problem is not None:
            return _error(400, 100, problem)
    elif kind == "text":
        text = body.get("text", {}).get("body") if isinstance(body.get("text"), dict) else None
        if not isinstance(text, str) or not text:
            return _error(400, 100, "text.body is required")
        if len(text) > TEXT_LIMIT:
            return _error(400, 100, f"text.body is longer than {TEXT_LIMIT} characters")
    else:
        return _error(400, 100, "the sandbox sends text and template messages only")
    message_id = wamid()
    SandboxGraphMessage.objects.create(
        phone_number_id=phone_number_id,
        kind=kind,
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


# --- media ---------------------------------------------------------------------------


def _media_id() -> str:
    # Meta's media ids are long decimal numbers.
    return str(10**15 + secrets.randbelow(9 * 10**15))


def media_create(*, data: bytes, mime_type: str, filename: str = "") -> SandboxMedia:
    """Hold `data` as media, as an upload does."""
    return SandboxMedia.objects.create(
        id=_media_id(),
        mime_type=mime_type,
        sha256=hashlib.sha256(data).hexdigest(),
        file_size=len(data),
        filename=filename,
        data=data,
    )


@csrf_exempt
@require_http_methods(["POST"])
def media_upload(request: HttpRequest, version: str, phone_number_id: str) -> HttpResponse:
    refused = _unauthorized(request)
    if refused is not None:
        return refused
    _, planned = _planned("graph.media.upload")
    if planned is not None:
        return planned
    if request.content_type != "multipart/form-data":
        return _error(400, 100, "the upload must be multipart/form-data")
    if request.POST.get("messaging_product") != "whatsapp":
        return _error(400, 100, "messaging_product must be whatsapp")
    mime_type = request.POST.get("type", "").strip()
    if not mime_type or "/" not in mime_type:
        return _error(400, 100, "type (the file's MIME type) is required")
    upload = request.FILES.get("file")
    if upload is None:
        return _error(400, 100, "file is required")
    if upload.size is None or not 0 < upload.size <= MEDIA_LIMIT:
        return _error(400, 131053, f"the file must hold 1 to {MEDIA_LIMIT} bytes")
    media = media_create(data=upload.read(), mime_type=mime_type, filename=upload.name or "")
    return _json({"id": media.id})


def _signature(media_id: str, expires: int) -> str:
    return salted_hmac(_SIGNING_SALT, f"{media_id}:{expires}", algorithm="sha256").hexdigest()


def media_url(request: HttpRequest, media: SandboxMedia) -> str:
    """A download URL for `media` that expires after SANDBOX_MEDIA_URL_SECONDS, shaped
    like Meta's (`.../whatsapp_business/attachments/?mid=...&ext=...&hash=...`)."""
    expires = int(time.time()) + settings.SANDBOX_MEDIA_URL_SECONDS
    path = reverse("sandbox:graph-media-download")
    query = f"?mid={media.id}&ext={expires}&hash={_signature(media.id, expires)}"
    return sandbox_url(request, path + query)


@csrf_exempt
@require_http_methods(["GET"])
def media_info(request: HttpRequest, version: str, media_id: str) -> HttpResponse:
    refused = _unauthorized(request)
    if refused is not None:
        return refused
    _, planned = _planned("graph.media")
    if planned is not None:
        return planned
    media = SandboxMedia.objects.filter(pk=media_id).defer("data").first()
    if media is None:
        return _error(
            404, 100, f"Unsupported get request. Object with ID '{media_id}' does not exist",
            "GraphMethodException",
        )  # fmt: skip
    return _json(
        {
            "messaging_product": "whatsapp",
            "url": media_url(request, media),
            "mime_type": media.mime_type,
            "sha256": media.sha256,
            "file_size": media.file_size,
            "id": media.id,
        }
    )


def _connection_of(environ: dict[str, Any]) -> socket.socket | None:
    """The client's socket under gunicorn or Django's runserver, else None."""
    sock = environ.get("gunicorn.socket")
    if isinstance(sock, socket.socket):
        return sock
    # runserver: wsgi.input wraps the connection's buffered reader.
    reader = getattr(getattr(environ.get("wsgi.input"), "_read", None), "__self__", None)
    sock = getattr(getattr(reader, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _cut_short(data: bytes, environ: dict[str, Any]) -> Iterator[bytes]:
    """Half the body, then the connection goes away. WSGI gives an application no way
    to drop its connection, and runserver would keep it open for the next request while
    the client waits for the missing bytes until its read timeout; so shut the socket
    where we can find it, and fail the stream (gunicorn then closes it too)."""
    yield data[: len(data) // 2]
    sock = _connection_of(environ)
    if sock is not None:
        with suppress(OSError):  # already gone
            sock.shutdown(socket.SHUT_RDWR)
    raise ConnectionAbortedError("sandbox fault: the download was cut off mid-stream")


@csrf_exempt
@require_http_methods(["GET"])
def media_download(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    refused = _unauthorized(request)
    if refused is not None:
        return refused
    fault, planned = _planned("graph.media.download")
    if planned is not None:
        return planned
    media_id = request.GET.get("mid", "")
    expires = request.GET.get("ext", "")
    signature = request.GET.get("hash", "")
    if (
        not expires.isdigit()
        or not constant_time_compare(signature, _signature(media_id, int(expires)))
        or int(expires) <= int(time.time())  # so a lifetime of 0 is expired at once
    ):
        # Meta's lookaside host answers an expired or forged URL as not found.
        return _error(404, 100, "URL signature mismatch or expired", "GraphMethodException")
    media = SandboxMedia.objects.filter(pk=media_id).first()
    if media is None:
        return _error(404, 100, "Media not found", "GraphMethodException")
    data = bytes(media.data)
    headers = {"Content-Length": str(len(data))}
    if fault is not None and fault.truncate:
        return StreamingHttpResponse(
            _cut_short(data, request.META), content_type=media.mime_type, headers=headers
        )
    return HttpResponse(data, content_type=media.mime_type, headers=headers)
