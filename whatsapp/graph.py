"""The one seam to the WhatsApp Cloud (Graph) API: sending replies, marking read."""

import json
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import requests
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from multichannel.http import pooled_session
from multichannel.redaction import redact, redact_value

logger = logging.getLogger(__name__)

TEXT_LIMIT = 4096  # WhatsApp's maximum text message body, in characters
# Graph error codes worth retrying: throughput (130429), pair rate (131056), generic
# temporary errors (1, 2, 131000, 131016) and application rate limits (4, 80007).
TRANSIENT_CODES = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131056})
RATE_LIMIT_CODES = frozenset({4, 80007, 130429, 131056})


class GraphError(Exception):
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
        super().__init__(message)
        self.transient = transient
        # False when the request may have been delivered (timeout after sending):
        # repeating a send could then deliver the reply twice.
        self.retry_safe = retry_safe
        self.status = status
        self.code = code
        self.body = body


class GraphClient:
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
        self._token = token
        self.url = f"{base_url.rstrip('/')}/{version}/{phone_number_id}/messages"
        self.timeout = (5.0, timeout)
        self.max_retries = max_retries
        self._sleep = sleep
        self.session = session or pooled_session(base_url)

    def __repr__(self) -> str:
        return f"<GraphClient {self.url}>"

    def wait(self, seconds: float) -> None:
        """Pause between attempts; tests swap `_sleep` so that nothing really waits."""
        self._sleep(seconds)

    def send_text(self, *, text: str, to: str | None = None, recipient: str | None = None) -> str:
        """Send one text message; returns its WhatsApp message id. Users known only by
        a business-scoped user id are addressed with `recipient` instead of `to`."""
        if len(text) > TEXT_LIMIT:
            raise ValueError(f"text longer than {TEXT_LIMIT} characters; split it first")
        body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual"}
        if to:
            body["to"] = to
        elif recipient:
            body["recipient"] = recipient
        else:
            raise ValueError("a reply needs a phone number (to) or a business-scoped user id")
        body["type"] = "text"
        body["text"] = {"preview_url": False, "body": text}
        answer = self.request(body, idempotent=False)
        try:
            return str(answer["messages"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise GraphError("Graph API answer has no message id", transient=False) from None

    def mark_read(self, wamid: str) -> None:
        self.request(
            {"messaging_product": "whatsapp", "status": "read", "message_id": wamid},
            idempotent=True,
        )

    def request(self, body: Mapping[str, Any], *, idempotent: bool) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return self._post(body)
            except GraphError as exc:
                # Rate limits need minutes, not seconds: those go back to the caller.
                retry_inline = exc.transient and exc.code not in RATE_LIMIT_CODES
                retry_inline = retry_inline and (idempotent or exc.retry_safe)
                if not retry_inline or attempt >= self.max_retries:
                    raise
                delay = random.uniform(0.25, 0.5) * 2**attempt  # noqa: S311
                logger.warning("Graph API failed (%s), retry in %.2fs", exc, delay)
                self._sleep(delay)
                attempt += 1

    def _post(self, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            response = self.session.post(
                self.url,
                data=json.dumps(body, ensure_ascii=False).encode(),
                headers={
                    "Authorization": f"Bearer {self._token}",
                    "Content-Type": "application/json",
                },
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.ConnectTimeout:
            raise GraphError("Graph API: connect timeout", transient=True) from None
        except requests.Timeout:
            raise GraphError("Graph API: timed out", transient=True, retry_safe=False) from None
        except requests.ConnectionError:
            raise GraphError(
                "Graph API: connection failed", transient=True, retry_safe=False
            ) from None
        except requests.RequestException as exc:
            # Named by type only: the text of some (an invalid header value) quotes
            # the request's headers, our token among them.
            raise GraphError(f"Graph API: {type(exc).__name__}", transient=False) from None
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
            message += f" {redact(_scrub(detail, self._token))[:200]}"
        raise GraphError(
            message,
            transient=transient,
            status=response.status_code,
            code=code,
            body=redact_value(parsed),
        )


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


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


@lru_cache(maxsize=1)
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


@receiver(setting_changed)
def _reset_client(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("WHATSAPP_") or setting == "SANDBOX":
        graph_client.cache_clear()
