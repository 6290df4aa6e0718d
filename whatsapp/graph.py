"""The Graph API client (WhatsApp Cloud API) on the shared HTTP seam: sending replies,
marking read. It adds the Graph API's error codes to the seam's retry rules."""

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import requests
from django.conf import settings

from multichannel.http import ServiceClient, ServiceError, TransportFailure, settings_cached
from multichannel.redaction import redact_value

logger = logging.getLogger(__name__)

TEXT_LIMIT = 4096  # WhatsApp's maximum text message body, in characters
# Graph error codes worth retrying: throughput (130429), pair rate (131056), generic
# temporary errors (1, 2, 131000, 131016) and application rate limits (4, 80007).
TRANSIENT_CODES = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131056})
RATE_LIMIT_CODES = frozenset({4, 80007, 130429, 131056})
# How a media download URL that has run out answers.
EXPIRED_URL = frozenset({401, 403, 404, 410})


class GraphError(ServiceError):
    """A failed Graph API call; `code` is the Graph error code when there was one."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        status: int | None = None,
        code: int | None = None,
        body: Any = None,
        retry_safe: bool = True,
    ) -> None:
        super().__init__(message, status=status, body=body, retry_safe=retry_safe)
        self.transient = transient
        self.code = code


class MediaTooLargeError(ValueError):
    """The media is larger than we accept: no retry will change that."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"media of {size} bytes is over the {limit}-byte limit")
        self.size = size
        self.limit = limit


def _addressed(to: str | None, recipient: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual"}
    if to:
        body["to"] = to
    elif recipient:
        body["recipient"] = recipient
    else:
        raise ValueError("a reply needs a phone number (to) or a business-scoped user id")
    return body


class GraphClient(ServiceClient):
    name = "Graph API"

    def __init__(
        self,
        *,
        token: str,
        base_url: str,
        version: str,
        phone_number_id: str,
        timeout: float = 15.0,
        max_retries: int = 3,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            base_url=base_url,
            timeout=timeout,
            connect_timeout=5.0,
            max_retries=max_retries,
            session=session,
            sleep=sleep,
            secret=token,
        )
        self._token = token
        self.version = version
        self.url = f"{self.base_url}/{version}/{phone_number_id}/messages"

    def __repr__(self) -> str:
        return f"<GraphClient {self.url}>"

    def send_text(
        self,
        *,
        text: str,
        to: str | None = None,
        recipient: str | None = None,
        reply_to: str | None = None,
    ) -> str:
        """Send one text message; returns its WhatsApp message id. Users known only by
        a business-scoped user id are addressed with `recipient` instead of `to`;
        `reply_to` quotes the user's message it answers."""
        if len(text) > TEXT_LIMIT:
            raise ValueError(f"text longer than {TEXT_LIMIT} characters; split it first")
        body = _addressed(to, recipient)
        if reply_to:
            body["context"] = {"message_id": reply_to}
        body["type"] = "text"
        body["text"] = {"preview_url": False, "body": text}
        return self._sent_id(self.request(body, idempotent=False))

    def send_template(
        self, *, name: str, language: str, to: str | None = None, recipient: str | None = None
    ) -> str:
        """Send an approved template: the only message allowed outside the 24-hour
        customer-service window."""
        body = _addressed(to, recipient)
        body["type"] = "template"
        body["template"] = {"name": name, "language": {"code": language}}
        return self._sent_id(self.request(body, idempotent=False))

    def _sent_id(self, answer: dict[str, Any]) -> str:
        try:
            return str(answer["messages"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise GraphError("Graph API answer has no message id", transient=False) from None

    def mark_read(self, wamid: str) -> None:
        self.request(
            {"messaging_product": "whatsapp", "status": "read", "message_id": wamid},
            idempotent=True,
        )

    def typing(self, wamid: str) -> None:
        """Mark the user's message read and show "typing…" (for about 25 seconds, or until
        the reply arrives). One attempt: it is cosmetic, and renewed while work goes on."""
        self.request(
            {
                "messaging_product": "whatsapp",
                "status": "read",
                "message_id": wamid,
                "typing_indicator": {"type": "text"},
            },
            idempotent=True,
            retries=0,
        )

    def media_info(self, media_id: str) -> dict[str, Any]:
        """Where to download a user's media: `{url, mime_type, sha256, file_size, id}`.
        The URL lives minutes; the media id days."""
        result: dict[str, Any] = self.send(
            "GET",
            f"{self.base_url}/{self.version}/{quote(media_id, safe='')}",
            what="Graph API media",
            read=self._read,
            headers={"Authorization": f"Bearer {self._token}"},
            idempotent=True,
        )
        return result

    def media_download(self, url: str, *, max_bytes: int) -> bytes:
        """The media's bytes from the URL `media_info` gave (bearer token required).
        Refuses more than `max_bytes` without reading it all."""
        result: bytes = self.send(
            "GET",
            url,
            what="Graph API media download",
            read=lambda response: self._read_bytes(response, max_bytes),
            headers={"Authorization": f"Bearer {self._token}"},
            idempotent=True,
            stream=True,
        )
        return result

    def _read_bytes(self, response: requests.Response, max_bytes: int) -> bytes | GraphError:
        if not 200 <= response.status_code < 300:
            response.close()
            expired = response.status_code in EXPIRED_URL
            return GraphError(
                f"Graph API media download: HTTP {response.status_code}",
                # An expired URL: the next attempt asks for a fresh one.
                transient=expired or response.status_code >= 500,
                status=response.status_code,
            )
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            response.close()
            raise MediaTooLargeError(int(declared), max_bytes)
        chunks, size = [], 0
        try:
            for chunk in response.iter_content(65536):
                size += len(chunk)
                if size > max_bytes:
                    raise MediaTooLargeError(size, max_bytes)
                chunks.append(chunk)
        except requests.RequestException:
            # Broken off mid-stream: what arrived is not the file; try again later.
            return GraphError("Graph API media download: broken off", transient=True)
        finally:
            response.close()
        content = b"".join(chunks)
        if declared and declared.isdigit() and int(declared) != len(content):
            return GraphError("Graph API media download: incomplete", transient=True)
        return content

    def request(
        self, body: Mapping[str, Any], *, idempotent: bool, retries: int | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.send(
            "POST",
            self.url,
            what="Graph API",
            read=self._read,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/json",
            },
            data=json.dumps(body, ensure_ascii=False).encode(),
            idempotent=idempotent,
            retries=retries,
        )
        return result

    def retry_now(self, error: ServiceError) -> bool:
        # Rate limits need minutes, not seconds: those go back to the caller. An expired
        # download URL stays expired: the caller asks for a fresh one instead.
        if getattr(error, "code", None) in RATE_LIMIT_CODES or error.status in EXPIRED_URL:
            return False
        return super().retry_now(error)

    def transport_error(
        self, what: str, failure: str, *, retry_safe: bool, detail: str = ""
    ) -> GraphError:
        message = {
            TransportFailure.CONNECT: f"{what}: connect timeout",
            TransportFailure.TIMEOUT: f"{what}: timed out",
            TransportFailure.LOST: f"{what}: connection failed",
        }.get(failure, f"{what}: {detail}")
        return GraphError(
            message, transient=failure != TransportFailure.OTHER, retry_safe=retry_safe
        )

    def _read(self, response: requests.Response) -> dict[str, Any] | GraphError:
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        if 200 <= response.status_code < 300 and isinstance(parsed, dict):
            return parsed
        error = parsed.get("error", {}) if isinstance(parsed, dict) else {}
        code = error.get("code") if isinstance(error, dict) else None
        code = code if isinstance(code, int) else None
        detail = str(error.get("message", "")) if isinstance(error, dict) else ""
        transient = response.status_code >= 500 or response.status_code == 429
        transient = transient or code in TRANSIENT_CODES
        message = f"Graph API: HTTP {response.status_code}"
        if code is not None:
            message += f" code {code}"
        if detail:
            message += f" {self.server_text(detail)[:200]}"
        # Auditors can read stored errors: a body may echo our access token.
        body = redact_value(parsed)
        if self._token:
            body = json.loads(json.dumps(body).replace(self._token, "[redacted]"))
        return GraphError(
            message, transient=transient, status=response.status_code, code=code, body=body
        )


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_message(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Split a long reply into parts of at most `limit` characters, preferring paragraph
    breaks, then sentence ends, then spaces; a single overlong word is cut."""
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[: limit + 1]
        cut = window.rfind("\n\n")
        if cut <= 0:
            ends = [m.start() for m in _SENTENCE_END.finditer(window)]
            cut = ends[-1] if ends else -1
        if cut <= 0:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


@settings_cached("WHATSAPP_")
def graph_client() -> GraphClient:
    """The process-wide Graph API client (one pooled session)."""
    return GraphClient(
        token=settings.WHATSAPP_TOKEN,
        base_url=settings.WHATSAPP_GRAPH_URL,
        version=settings.WHATSAPP_GRAPH_VERSION,
        phone_number_id=settings.WHATSAPP_PHONE_NUMBER_ID,
        timeout=settings.WHATSAPP_TIMEOUT,
        max_retries=settings.WHATSAPP_MAX_RETRIES,
    )
