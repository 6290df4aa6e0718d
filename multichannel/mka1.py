"""The one seam to the MKA1 LLM API, shared by both channels.

Every call goes through `Mka1Client.request()`: bearer auth and `X-On-Behalf-Of` on
every request, connect/read timeouts, retries with capped exponential backoff and full
jitter, and translation of failures into `Mka1Error` subclasses that say whether they
are transient (worth retrying later) or permanent. The API key is kept out of every
log line, exception text and repr; audit rows carry only its fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import quote

import requests
from django.conf import settings
from urllib3 import encode_multipart_formdata

from audit.services import audit_ready
from multichannel.http import (
    ServiceClient,
    ServiceError,
    TransportFailure,
    retry_after_seconds,
    settings_cached,
)

logger = logging.getLogger(__name__)

RESPONSE_ID_RE = re.compile(r"^resp[-_][a-zA-Z0-9]+$")
Channel = Literal["whatsapp", "webapp"]
ChainMode = Literal["both", "conversation", "previous_response_id"]

API_PREFIX = "/api/v1/llm"
# Words MKA1 (and OpenAI-style servers) use when a conversation already has a turn
# running; such an answer means "try again shortly", not "your request is wrong".
_BUSY_RE = re.compile(r"\b(lock(ed)?|busy|in[ _-]progress|concurrent)\b", re.IGNORECASE)
_ERROR_BODY_LIMIT = 2000


def api_key_fingerprint(api_key: str) -> str:
    """A non-reversible id of an API key: proves "same key" without revealing it."""
    return "sha256:" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


def is_response_id(value: str) -> bool:
    return bool(RESPONSE_ID_RE.fullmatch(value))


@dataclass(frozen=True)
class Mka1Object:
    """A JSON object from MKA1: parsed, plus the body text exactly as received."""

    data: dict[str, Any]
    raw: str = field(repr=False)

    @property
    def id(self) -> str:
        return str(self.data.get("id", ""))


# --- errors ------------------------------------------------------------------------


class Mka1Error(ServiceError):
    """A failed MKA1 call. `transient` says whether trying again later may succeed;
    `retry_safe` whether the request can be repeated at once (see ServiceError)."""


class Mka1TransientError(Mka1Error):
    transient = True


class Mka1PermanentError(Mka1Error):
    transient = False


class Mka1ConnectionError(Mka1TransientError):
    pass


class Mka1TimeoutError(Mka1TransientError):
    pass


class Mka1RateLimitError(Mka1TransientError):
    pass


class Mka1ServerError(Mka1TransientError):
    pass


class Mka1ConversationBusyError(Mka1TransientError):
    pass


class Mka1NotFoundError(Mka1PermanentError):
    pass


class Mka1AuthError(Mka1PermanentError):
    pass


class Mka1InvalidRequestError(Mka1PermanentError):
    pass


# --- the client --------------------------------------------------------------------


class _BearerAuth(requests.auth.AuthBase):
    """Adds the bearer header at send time, so the key never sits in a repr."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._api_key}"
        return r

    def __repr__(self) -> str:
        return "<BearerAuth ***>"


class Mka1Client(ServiceClient):
    name = "MKA1"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        model: str,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        chain_mode: ChainMode = "both",
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        before_call: Callable[[], None] | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("MKA1 API key is empty")
        super().__init__(
            base_url=base_url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            backoff=backoff,
            backoff_max=backoff_max,
            session=session,
            sleep=sleep,
            secret=api_key,
        )
        self._auth = _BearerAuth(api_key)
        self.key_fingerprint = api_key_fingerprint(api_key)
        self.model = model
        self.chain_mode = chain_mode
        self._before_call = before_call

    def __repr__(self) -> str:
        return f"<Mka1Client {self.base_url} key={self.key_fingerprint}>"

    # -- the seed guide's wrapper ----------------------------------------------------

    def create_conversation(
        self, user_id: str, *, metadata: Mapping[str, str] | None = None
    ) -> Mka1Object:
        body: dict[str, Any] = {}
        if metadata:
            body["metadata"] = dict(metadata)
        return self.request("POST", "/conversations", user_id=user_id, json_body=body)

    def create_response(
        self,
        user_id: str,
        *,
        conversation_id: str,
        message: str | list[dict[str, Any]],
        previous_response_id: str | None,
        channel: Channel,
        metadata: Mapping[str, str] | None = None,
    ) -> Mka1Object:
        body: dict[str, Any] = {"model": self.model, "input": message}
        chain_previous = previous_response_id is not None and self.chain_mode != "conversation"
        # Only previous_response_id mode leaves the conversation out, and only once there
        # is a previous response to chain to (the first turn still opens the thread).
        if self.chain_mode != "previous_response_id" or not chain_previous:
            body["conversation"] = conversation_id
        if chain_previous:
            body["previous_response_id"] = previous_response_id
        body["store"] = True
        body["stream"] = False
        body["metadata"] = {**(metadata or {}), "channel": channel}
        return self.request("POST", "/responses", user_id=user_id, json_body=body)

    def transcribe(
        self, user_id: str, *, filename: str, content: bytes, content_type: str
    ) -> Mka1Object:
        """Speech to text (`TranscriptionResponse`: text, language, ...)."""
        return self.request(
            "POST",
            "/speech/transcriptions",
            user_id=user_id,
            multipart={"file": (filename, content, content_type)},
        )

    def upload_file(
        self,
        user_id: str,
        *,
        filename: str,
        content: bytes,
        content_type: str,
        purpose: str = "user_data",
    ) -> Mka1Object:
        """A file MKA1 keeps for this user, to refer to by id in a response's input."""
        return self.request(
            "POST",
            "/files",
            user_id=user_id,
            multipart={"file": (filename, content, content_type), "purpose": purpose},
        )

    def create_feedback(
        self, user_id: str, *, response_id: str, rating: str, description: str | None = None
    ) -> Mka1Object:
        """Rate a stored response (`thumbs_up` or `thumbs_down`)."""
        body: dict[str, Any] = {"id": response_id, "rating": rating}
        if description:
            body["description"] = description
        return self.request("POST", "/feedback/responses", user_id=user_id, json_body=body)

    def delete_response(self, user_id: str, response_id: str) -> Mka1Object:
        return self.request("DELETE", f"/responses/{_segment(response_id)}", user_id=user_id)

    def delete_conversation_item(
        self, user_id: str, conversation_id: str, item_id: str
    ) -> Mka1Object:
        path = f"/conversations/{_segment(conversation_id)}/items/{_segment(item_id)}"
        return self.request("DELETE", path, user_id=user_id)

    def delete_conversation(self, user_id: str, conversation_id: str) -> Mka1Object:
        return self.request(
            "DELETE", f"/conversations/{_segment(conversation_id)}", user_id=user_id
        )

    def delete_file(self, user_id: str, file_id: str) -> Mka1Object:
        return self.request("DELETE", f"/files/{_segment(file_id)}", user_id=user_id)

    def list_transcriptions(
        self, user_id: str, *, after: str | None = None, limit: int = 100
    ) -> Mka1Object:
        params = {"limit": str(limit), "order": "asc"}
        if after is not None:
            params["after"] = after
        return self.request("GET", "/speech/transcriptions/history", user_id=user_id, params=params)

    def delete_transcription(self, user_id: str, transcription_id: str) -> Mka1Object:
        path = f"/speech/transcriptions/history/{_segment(transcription_id)}"
        return self.request("DELETE", path, user_id=user_id)

    def get_response(self, user_id: str, response_id: str) -> Mka1Object:
        if not is_response_id(response_id):
            raise Mka1InvalidRequestError(
                "response id must match ^resp[-_][a-zA-Z0-9]+$", status=None
            )
        return self.request("GET", f"/responses/{_segment(response_id)}", user_id=user_id)

    def get_conversation_item(self, user_id: str, conversation_id: str, item_id: str) -> Mka1Object:
        path = f"/conversations/{_segment(conversation_id)}/items/{_segment(item_id)}"
        return self.request("GET", path, user_id=user_id)

    def list_conversation_items(
        self,
        user_id: str,
        conversation_id: str,
        *,
        limit: int | None = None,
        after: str | None = None,
        order: Literal["asc", "desc"] = "asc",
    ) -> Mka1Object:
        params: dict[str, str] = {"order": order}
        if limit is not None:
            params["limit"] = str(limit)
        if after is not None:
            params["after"] = after
        path = f"/conversations/{_segment(conversation_id)}/items"
        return self.request("GET", path, user_id=user_id, params=params)

    # -- the seam -------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        user_id: str,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        multipart: Mapping[str, str | tuple[str, bytes, str]] | None = None,
    ) -> Mka1Object:
        if not user_id:
            raise ValueError("X-On-Behalf-Of (the end user id) is required on every call")
        if self._before_call is not None:
            self._before_call()  # e.g. refuse to call while the audit ledger cannot record
        headers = {"X-On-Behalf-Of": user_id, "Accept": "application/json"}
        data = None
        if json_body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode()
        elif multipart is not None:
            # Encoded once, so a retry sends the very same bytes.
            data, headers["Content-Type"] = encode_multipart_formdata(dict(multipart))
        what = f"MKA1 {method} {path}"
        # A POST that may have reached MKA1 (read timeout, connection lost) is not
        # repeated here: it could store a second response in the conversation.
        result: Mka1Object = self.send(
            method,
            f"{self.base_url}{API_PREFIX}{path}",
            what=what,
            read=lambda response: self._read(what, response),
            headers=headers,
            data=data,
            params=params,
            auth=self._auth,
            # A repeated DELETE finds the object gone (404), which callers take as done.
            idempotent=method in ("GET", "HEAD", "OPTIONS", "DELETE"),
        )
        return result

    def transport_error(
        self, what: str, failure: str, *, retry_safe: bool, detail: str = ""
    ) -> Mka1Error:
        if failure == TransportFailure.CONNECT:
            return Mka1ConnectionError(f"{what}: could not connect", retry_safe=True)
        if failure == TransportFailure.TIMEOUT:
            return Mka1TimeoutError(
                f"{what}: no answer within {self.timeout[1]}s", retry_safe=retry_safe
            )
        if failure == TransportFailure.LOST:
            return Mka1ConnectionError(f"{what}: connection lost", retry_safe=retry_safe)
        return Mka1PermanentError(f"{what}: {detail}")

    def _read(self, what: str, response: requests.Response) -> Mka1Object | Mka1Error:
        text = response.content.decode("utf-8", errors="replace")
        if 200 <= response.status_code < 300:
            try:
                parsed = json.loads(text)
            except ValueError:
                return Mka1PermanentError(
                    f"{what}: answer is not JSON", status=response.status_code
                )
            if not isinstance(parsed, dict):
                return Mka1PermanentError(
                    f"{what}: answer is not a JSON object", status=response.status_code
                )
            return Mka1Object(data=parsed, raw=text)
        return self._error_from(what, response, text)

    def _error_from(self, what: str, response: requests.Response, text: str) -> Mka1Error:
        status = response.status_code
        text = self.server_text(text)[:_ERROR_BODY_LIMIT]
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        # The reason phrase comes from the server too, so it is redacted like the body.
        detail = _error_message(body) or self.server_text(response.reason or "")
        message = f"{what}: HTTP {status} {detail}".rstrip()
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        cls: type[Mka1Error]
        if status == 429:
            cls = Mka1RateLimitError
        elif status in (409, 423) and (status == 423 or _BUSY_RE.search(text)):
            cls = Mka1ConversationBusyError
        elif status == 408:
            cls = Mka1TimeoutError
        elif status >= 500:
            cls = Mka1ServerError
        elif status == 404:
            cls = Mka1NotFoundError
        elif status in (401, 403):
            cls = Mka1AuthError
        else:
            cls = Mka1InvalidRequestError
        return cls(message, status=status, body=body, retry_after=retry_after)


def _segment(value: str) -> str:
    # "." and ".." survive quoting and requests resolves them, which would send the
    # call (as this end user) to a different endpoint.
    if not value or value in (".", ".."):
        raise Mka1InvalidRequestError("empty or dot-segment id in MKA1 path")
    return quote(value, safe="")


def _error_message(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("code") or "")[:300]
        if isinstance(err, str):
            return err[:300]
        return str(body.get("message", ""))[:300]
    return str(body)[:300] if body else ""


# --- the shared instance -----------------------------------------------------------


@settings_cached("MKA1_")
def client() -> Mka1Client:
    """The process-wide client both channels use (one pooled session)."""
    return Mka1Client(
        api_key=settings.MKA1_API_KEY,
        base_url=settings.MKA1_BASE_URL,
        model=settings.MKA1_MODEL,
        timeout=settings.MKA1_TIMEOUT,
        connect_timeout=settings.MKA1_CONNECT_TIMEOUT,
        max_retries=settings.MKA1_MAX_RETRIES,
        backoff=settings.MKA1_BACKOFF_SECONDS,
        backoff_max=settings.MKA1_BACKOFF_MAX_SECONDS,
        chain_mode=cast(ChainMode, settings.MKA1_CHAIN_MODE),
        # Every call is audited: none is made while the ledger cannot record.
        before_call=audit_ready,
    )
