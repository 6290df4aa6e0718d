"""Meta's webhook as a DRF view: the signature over the raw body authenticates it (an
authentication class, before anything is parsed), the subscription handshake answers
text/plain, and every answer is Meta's protocol (plain text and a status), not our API's
JSON error shape. No session, CSRF or throttling applies: Meta signs, and redelivers
until it gets a 200."""

import hmac
import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from multichannel.metrics import WEBHOOK_REQUESTS
from whatsapp.services import signature_valid, webhook_accept
from whatsapp.tasks import webhook_fan_out_queue

SIGNATURE_HEADER = "X-Hub-Signature-256"


def _text(body: str, status: int) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")


class WebhookRefused(exceptions.APIException):
    """An answer to Meta other than 200, with the plain-text body it gets."""

    def __init__(self, body: str, status: int) -> None:
        super().__init__(body)
        self.status_code = status


class Meta:
    """The authenticated sender of a verified delivery, and the body it signed."""

    is_authenticated = True

    def __init__(self, body: bytes) -> None:
        self.body = body


class MetaSignatureAuthentication(BaseAuthentication):
    """A POST is Meta's when X-Hub-Signature-256 is the HMAC-SHA256 of the raw body with
    the app secret. The body is read here, once, within WHATSAPP_MAX_BODY_BYTES."""

    def authenticate(self, request: Request) -> tuple[Meta, None] | None:
        if request.method != "POST":
            return None  # the handshake proves itself with the verify token
        body = read_body(request._request, settings.WHATSAPP_MAX_BODY_BYTES)
        header = request.headers.get(SIGNATURE_HEADER, "")
        if not header:
            raise WebhookRefused(f"missing {SIGNATURE_HEADER}", 401)
        if not signature_valid(body=body, header=header, app_secret=settings.WHATSAPP_APP_SECRET):
            # 403 and nothing stored: an unsigned body is not from Meta.
            raise WebhookRefused("signature mismatch", 403)
        return Meta(body), None


def read_body(request: HttpRequest, limit: int) -> bytes:
    """The raw body, at most `limit` bytes, else 413. A chunked body (no Content-Length)
    is read from the server's input stream, which decodes the chunks (gunicorn does);
    Django's own stream would read nothing and the signature check would fail falsely.
    With neither header there is no body (RFC 9112)."""
    length = request.META.get("CONTENT_LENGTH")
    if length:
        try:
            declared = int(length)
        except ValueError:
            raise WebhookRefused("bad Content-Length", 400) from None
        if declared > limit:
            raise WebhookRefused("payload too large", 413)
        body = request.read(limit + 1)
    elif "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        stream = request.META["wsgi.input"]
        chunks, size = [], 0
        while size <= limit:
            chunk = stream.read(min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        body = b"".join(chunks)
    else:
        body = b""
    if len(body) > limit:
        raise WebhookRefused("payload too large", 413)
    return body


class WebhookApi(APIView):
    """GET: Meta's subscription handshake. POST: a signed delivery of messages and
    statuses, kept before it is acknowledged and fanned out by the worker."""

    authentication_classes = [MetaSignatureAuthentication]
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []
    http_method_names = ["get", "post"]
    schema = None  # Meta's protocol, not part of our API

    def get(self, request: Request) -> HttpResponse:
        """Echo the challenge if the verify token is ours."""
        token = request.query_params.get("hub.verify_token", "")
        expected = settings.WHATSAPP_VERIFY_TOKEN
        subscribing = request.query_params.get("hub.mode") == "subscribe"
        if subscribing and expected and token and _same(token, expected):
            return _text(request.query_params.get("hub.challenge", ""), 200)
        return _text("verification failed", 403)

    def post(self, request: Request) -> HttpResponse:
        assert isinstance(request.user, Meta)
        try:
            payload = json.loads(request.user.body)
        except (ValueError, RecursionError):  # RecursionError: nested thousands deep
            return _text("malformed JSON", 400)
        if not isinstance(payload, dict):
            return _text("expected a JSON object", 400)
        # Only what durability needs: the delivery is committed before the 200 (Meta
        # stops redelivering on 200); the worker stores its messages and statuses.
        delivery = webhook_accept(raw_body=request.user.body, payload=payload)
        webhook_fan_out_queue(delivery.pk)
        return _text("EVENT_RECEIVED", 200)

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        WEBHOOK_REQUESTS.labels(str(response.status_code)).inc()
        return super().finalize_response(request, response, *args, **kwargs)

    def handle_exception(self, exc: Exception) -> HttpResponse:  # type: ignore[override]
        # Meta's protocol: plain text and a status, never the API's JSON error shape
        # (DRF accepts any Django response here).
        if isinstance(exc, WebhookRefused):
            return _text(str(exc.detail), exc.status_code)
        if isinstance(exc, exceptions.MethodNotAllowed):
            return HttpResponseNotAllowed(["GET", "POST"])
        raise exc


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
