"""A `requests` adapter that serves `sandbox://<service>/...` URLs from the sandbox
views in this process, through Django's full request handling. The bytes on the wire
are real HTTP bodies; only the socket is skipped, so no port or second server is needed.
"""

from typing import Any
from urllib.parse import urlsplit

import requests
from django.test import Client
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict


class InProcessAdapter(BaseAdapter):
    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        parts = urlsplit(request.url or "")
        path = f"/sandbox/{parts.netloc}{parts.path}"
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-type"}
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        # Client leaves the caller's database connection and transaction alone.
        answer = Client(raise_request_exception=False).generic(
            request.method or "GET",
            path,
            data=body,
            content_type=request.headers.get("Content-Type", "application/octet-stream"),
            headers=headers,
            QUERY_STRING=parts.query,
        )
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
