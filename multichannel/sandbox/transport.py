"""A `requests` adapter that serves `sandbox://<service>/...` URLs from the sandbox
views in this process, through Django's full request handling. The bytes on the wire
are real HTTP bodies; only the socket is skipped, so no port or second server is needed.
"""

from typing import Any
from urllib.parse import urlsplit

import requests
from django.core.handlers.base import BaseHandler
from django.core.handlers.wsgi import WSGIRequest
from django.test.client import RequestFactory
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict


class _EnvironFactory(RequestFactory):
    """Builds the WSGI environ of a request instead of a request object."""

    def request(self, **request: Any) -> Any:
        return self._base_environ(**request)  # type: ignore[attr-defined]


class _Handler(BaseHandler):
    """Django's request handling without the request_started/request_finished signals:
    those close the calling thread's database connection (as a WSGI server's request
    end should), which would break the worker that is calling the sandbox. Unlike the
    test client's handler it never reconnects a global signal, so it is thread-safe."""

    def __init__(self) -> None:
        super().__init__()
        self.load_middleware()

    def __call__(self, environ: dict[str, Any]) -> Any:
        return self.get_response(WSGIRequest(environ))


class InProcessAdapter(BaseAdapter):
    def __init__(self) -> None:
        super().__init__()
        self._handler = _Handler()  # middleware loaded once, shared by all threads

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        parts = urlsplit(request.url or "")
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-type"}
        environ: Any = _EnvironFactory().generic(
            request.method or "GET",
            f"/sandbox/{parts.netloc}{parts.path}",
            data=body,
            content_type=request.headers.get("Content-Type", "application/octet-stream"),
            headers=headers,
            QUERY_STRING=parts.query,
        )
        answer: Any = self._handler(environ)
        response = requests.Response()
        response.status_code = answer.status_code
        response.reason = answer.reason_phrase
        response.headers = CaseInsensitiveDict(dict(answer.items()))
        response._content = answer.content
        response.encoding = "utf-8"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass
