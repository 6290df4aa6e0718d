"""Serving HTTP requests to this app inside this process, through Django's full request
handling (middleware, host validation, CSRF exemptions and all): `sandbox://<service>/...`
URLs reach the sandbox's stand-ins for MKA1 and the Graph API, and `in_process_post`
plays Meta posting a webhook. The bytes are real HTTP bodies; only the socket is
skipped, so no port or second server is needed. Requests carry a Host the app's
ALLOWED_HOSTS accepts, so this works whatever the operator allowed."""

import http.client
import io
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests
from django.conf import settings
from django.core.handlers.base import BaseHandler
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest
from django.http.request import split_domain_port, validate_host
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import ProtocolError


def local_host() -> str:
    """A Host header this app answers to: SITE_URL's host, else the first concrete
    ALLOWED_HOSTS entry, else localhost."""
    allowed = settings.ALLOWED_HOSTS
    candidates = [urlsplit(settings.SITE_URL).netloc]
    candidates += [host.lstrip(".") for host in allowed if host not in ("*", ".")]
    candidates += ["localhost", "127.0.0.1"]
    for candidate in candidates:
        domain, _ = split_domain_port(candidate)
        if domain and validate_host(domain, allowed):
            return candidate
    return "localhost"


# Set in the WSGI environ of a request that arrived through a `sandbox://` URL, so a
# stand-in can hand out URLs the caller can follow the same way (`sandbox_url`).
IN_PROCESS = "multichannel.sandbox.in_process"


def sandbox_url(request: HttpRequest, path: str) -> str:
    """The URL under which the caller reaches `path` (one of this app's `/sandbox/...`
    paths): `sandbox://<service>/...` when it came in process, else absolute http(s)."""
    if request.META.get(IN_PROCESS):
        return "sandbox://" + path.removeprefix("/sandbox/")
    return request.build_absolute_uri(path)


def _environ(
    method: str, path: str, query: str, body: bytes, headers: dict[str, str], host: str
) -> dict[str, Any]:
    domain, port = split_domain_port(host)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": domain or "localhost",
        "SERVER_PORT": port or "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": host,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key not in ("HOST", "CONTENT_LENGTH"):
            environ[f"HTTP_{key}"] = value
    return environ


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


_handler: _Handler | None = None


def _serve(
    method: str,
    url_path: str,
    query: str,
    body: bytes,
    headers: dict[str, str],
    *,
    extra: dict[str, Any] | None = None,
) -> Any:
    global _handler
    if _handler is None:
        _handler = _Handler()  # middleware loaded once, shared by all threads
    environ = _environ(method, url_path, query, body, headers, local_host())
    environ.update(extra or {})
    return _handler(environ)


def _body(answer: Any) -> tuple[bytes, BaseException | None]:
    """The bytes of an answer; for a streamed one, those sent before it broke off."""
    if not answer.streaming:
        return answer.content, None
    chunks: list[bytes] = []
    try:
        for chunk in answer.streaming_content:
            chunks.append(bytes(chunk))
    except Exception as exc:  # the stream broke off: the caller gets what came before
        return b"".join(chunks), exc
    # Not answer.close(): it sends request_finished, which would close the calling
    # thread's database connection (see _Handler).
    return b"".join(chunks), None


class _BrokenBody:
    """A `response.raw` whose body ends before its Content-Length, so reading it fails
    as urllib3 fails on a connection that dropped mid-body (requests then raises
    ChunkedEncodingError, whether it reads at once or streams)."""

    def __init__(self, received: bytes, expected: int, original: Any) -> None:
        self._received = received
        self._expected = expected
        self._original_response = original  # what requests reads cookies from

    def stream(self, amt: int | None = None, decode_content: bool = True) -> Iterator[bytes]:
        size = amt or len(self._received) or 1
        for start in range(0, len(self._received), size):
            yield self._received[start : start + size]
        missing = self._expected - len(self._received)
        raise ProtocolError(
            f"Connection broken: IncompleteRead({len(self._received)} bytes read, "
            f"{missing} more expected)",
            http.client.IncompleteRead(self._received, missing),
        )

    def read(self, amt: int | None = None, decode_content: bool = True) -> bytes:
        return b"".join(self.stream(amt, decode_content))

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass


class InProcessAdapter(BaseAdapter):
    """`sandbox://<service>/<path>` -> this app's `/sandbox/<service>/<path>`."""

    # Marks the request, so a stand-in answers with `sandbox://` URLs (see sandbox_url).
    environ: dict[str, Any] = {IN_PROCESS: True}

    def path(self, url: SplitResult) -> str:
        return f"/sandbox/{url.netloc}{url.path}"

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        parts = urlsplit(request.url or "")
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        headers = dict(request.headers.items())
        headers.setdefault("Content-Type", "application/octet-stream")
        answer = _serve(
            request.method or "GET",
            self.path(parts),
            parts.query,
            body,
            headers,
            extra=self.environ,
        )
        content, broken = _body(answer)
        headers_out = [
            *answer.items(),
            *(
                ("Set-Cookie", cookie.output(header="").strip())
                for cookie in answer.cookies.values()
            ),
        ]
        response = requests.Response()
        response.status_code = answer.status_code
        response.reason = answer.reason_phrase
        response.headers = CaseInsensitiveDict(dict(answer.items()))
        # What requests reads cookies from (a session keeps them, as a browser does).
        message = http.client.HTTPMessage()
        for name, value in headers_out:
            message[name] = value
        original = SimpleNamespace(msg=message)
        declared = answer.get("Content-Length", "")
        if broken is not None or (declared.isdigit() and int(declared) > len(content)):
            # Over a socket the client would see the connection drop mid-body.
            expected = int(declared) if declared.isdigit() else len(content) + 1
            response.raw = _BrokenBody(content, max(expected, len(content) + 1), original)
        else:
            response.raw = SimpleNamespace(_original_response=original)
            response._content = content
            response._content_consumed = True  # type: ignore[attr-defined]
        response.encoding = "utf-8"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


class AppAdapter(InProcessAdapter):
    """`http://<local host>/<path>` -> this app's `/<path>`, as a browser would ask."""

    environ: dict[str, Any] = {}  # a browser follows http:// URLs

    def path(self, url: SplitResult) -> str:
        return url.path or "/"


def in_process_browser() -> tuple[requests.Session, str]:
    """A browser-like session (cookies, redirects) on this app in process, and the base
    URL to use with it."""
    base = f"http://{local_host()}"
    session = requests.Session()
    session.trust_env = False
    session.mount(f"{base}/", AppAdapter())
    return session, base


def in_process_post(path: str, body: bytes, headers: dict[str, str]) -> int:
    """POST `body` to one of this app's own URLs in process; the status code."""
    return int(_serve("POST", path, "", body, headers).status_code)
