"""One error shape for the whole API, `{"error": "<one line>"}`: views raise, and this
handler answers, for our errors and for DRF's own (signed out, CSRF, throttled, bad
JSON, method not allowed) alike."""

from typing import Any

from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from multichannel.mka1 import Mka1Error, Mka1NotFoundError, Mka1TimeoutError


class ApiError(exceptions.APIException):
    """An error answer with its status and one-line message."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message)


class BadRequest(ApiError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "bad request"


class NotFound(ApiError):
    """Unknown, or not this user's: the same answer either way, so ids cannot be probed."""

    status_code = status.HTTP_404_NOT_FOUND
    default_detail = "not found"


class UpstreamError(ApiError):
    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = "MKA1 could not answer; try again later"


class UpstreamTimeout(ApiError):
    status_code = status.HTTP_504_GATEWAY_TIMEOUT
    default_detail = "MKA1 did not answer in time; try again"


def upstream_error(exc: Mka1Error) -> ApiError:
    """How an MKA1 failure is answered to the browser (never MKA1's own words)."""
    if isinstance(exc, Mka1NotFoundError):
        return NotFound()
    if isinstance(exc, Mka1TimeoutError):
        return UpstreamTimeout()
    return UpstreamError()


class ErrorSerializer(serializers.Serializer[Any]):
    error = serializers.CharField(help_text="What went wrong, in one line")


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = exception_handler(exc, context)
    if response is None:
        return None  # not an API error: a server error, Django's to answer
    response.data = ErrorSerializer({"error": _one_line(response.data)}).data
    return response


def _one_line(detail: Any) -> str:
    """DRF's detail (a string, or a serializer's {field: [messages]}) as one line."""
    if isinstance(detail, dict):
        if set(detail) == {"detail"}:
            return _one_line(detail["detail"])
        field, messages = next(iter(detail.items()))
        return f"{field}: {_one_line(messages)}"
    if isinstance(detail, list):
        return _one_line(detail[0]) if detail else ""
    return str(detail)
