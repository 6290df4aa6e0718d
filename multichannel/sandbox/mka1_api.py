"""What every endpoint of the MKA1 stand-in shares: the wire's JSON and error shapes,
who is calling (API key fingerprint + `X-On-Behalf-Of`), and the wrapper that checks the
bearer token, applies planned faults and the configured latency."""

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from multichannel.mka1 import api_key_fingerprint
from multichannel.sandbox.faults import fault_take

View = Callable[..., HttpResponse]


def json_answer(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> HttpResponse:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return HttpResponse(body, status=status, content_type="application/json", headers=headers or {})


def error_answer(status: int, message: str, kind: str, code: str | None = None) -> HttpResponse:
    return json_answer(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}, status
    )


def not_found(what: str) -> HttpResponse:
    # Another owner's object is "not found", exactly like one that never existed.
    return error_answer(404, f"{what} not found", "not_found")


def new_id(prefix: str, separator: str = "_") -> str:
    return f"{prefix}{separator}{secrets.token_hex(12)}"


class Caller:
    def __init__(self, key: str, user: str) -> None:
        self.key = key
        self.user = user

    @property
    def owner(self) -> dict[str, str]:
        """Filter arguments selecting what this caller owns."""
        return {"owner_key": self.key, "owner_user": self.user}


def mka1_endpoint(name: str) -> Callable[[View], View]:
    """Auth, fault injection and latency around a sandbox endpoint."""

    def decorate(view: View) -> View:
        @csrf_exempt
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or not auth[7:].strip():
                return error_answer(401, "Missing bearer token", "authentication_error")
            caller = Caller(
                api_key_fingerprint(auth[7:].strip()), request.headers.get("X-On-Behalf-Of", "")
            )
            fault = fault_take(name)
            if fault is not None:
                if fault.delay_ms:
                    time.sleep(fault.delay_ms / 1000)
                if fault.status:
                    return json_answer(
                        fault.payload
                        if fault.body is not None
                        else {"error": {"message": "Injected failure", "type": "server_error"}},
                        fault.status,
                        headers={str(k): str(v) for k, v in (fault.headers or {}).items()},
                    )
            if settings.SANDBOX_MKA1_LATENCY_MS:
                time.sleep(settings.SANDBOX_MKA1_LATENCY_MS / 1000)
            return view(request, caller, *args, **kwargs)

        return wrapped

    return decorate


def by_method(**views: View) -> View:
    """One URL, a view per HTTP method (`GET=...`, `DELETE=...`); 405 otherwise."""

    @csrf_exempt
    def dispatch(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        view = views.get(request.method or "")
        if view is None:
            answer = error_answer(405, f"{request.method} is not allowed", "invalid_request_error")
            answer["Allow"] = ", ".join(views)
            return answer
        return view(request, *args, **kwargs)

    return dispatch


def json_body(request: HttpRequest) -> dict[str, Any] | HttpResponse:
    if request.content_type != "application/json":
        return error_answer(415, "Content-Type must be application/json", "invalid_request_error")
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return error_answer(400, "Request body is not valid JSON", "invalid_request_error")
    if not isinstance(body, dict):
        return error_answer(400, "Request body must be a JSON object", "invalid_request_error")
    return body
