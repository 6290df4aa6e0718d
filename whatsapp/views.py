import hmac
import json
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from whatsapp.services import signature_valid, webhook_receive

logger = logging.getLogger(__name__)


def _text(body: str, status: int) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")


@csrf_exempt  # Meta cannot send a CSRF token; the HMAC signature authenticates it instead
@require_http_methods(["GET", "POST"])
def webhook(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _verify(request)
    return _receive(request)


def _verify(request: HttpRequest) -> HttpResponse:
    """Meta's subscription handshake: echo the challenge if the token is ours."""
    token = request.GET.get("hub.verify_token", "")
    expected = settings.WHATSAPP_VERIFY_TOKEN
    if request.GET.get("hub.mode") == "subscribe" and expected and token and _same(token, expected):
        return _text(request.GET.get("hub.challenge", ""), 200)
    return _text("verification failed", 403)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _read_body(request: HttpRequest, limit: int) -> bytes | HttpResponse:
    """The raw body, at most `limit` bytes (one more means too large), or the answer to
    give instead. A chunked body (no Content-Length) is read from the server's input
    stream, which decodes the chunks (gunicorn does); Django's own stream would read
    nothing and the signature check would fail falsely. With neither header there is
    no body (RFC 9112)."""
    length = request.META.get("CONTENT_LENGTH")
    if length:
        try:
            declared = int(length)
        except ValueError:
            return _text("bad Content-Length", 400)
        if declared > limit:
            return _text("payload too large", 413)
        return request.read(limit + 1)
    if "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return b""
    stream = request.META["wsgi.input"]
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _receive(request: HttpRequest) -> HttpResponse:
    limit = settings.WHATSAPP_MAX_BODY_BYTES
    body = _read_body(request, limit)
    if isinstance(body, HttpResponse):
        return body
    if len(body) > limit:
        return _text("payload too large", 413)
    header = request.headers.get("X-Hub-Signature-256", "")
    if not header:
        return _text("missing X-Hub-Signature-256", 401)
    if not signature_valid(body=body, header=header, app_secret=settings.WHATSAPP_APP_SECRET):
        # 403 and nothing stored: an unsigned body is not from Meta.
        return _text("signature mismatch", 403)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested thousands deep
        return _text("malformed JSON", 400)
    if not isinstance(payload, dict):
        return _text("expected a JSON object", 400)
    result = webhook_receive(raw_body=body, payload=payload)
    logger.info(
        "webhook %s: %d new, %d redelivered, %d statuses",
        result.delivery_id,
        result.stored,
        result.duplicates,
        result.statuses_applied,
    )
    # 200 only now that everything is committed; Meta stops redelivering on 200.
    return _text("EVENT_RECEIVED", 200)
