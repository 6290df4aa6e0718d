"""The one HTTP seam every outside service's client specialises (MKA1, the Graph API).

`ServiceClient` owns what the clients share: a pooled session, connect/read timeouts,
the retry loop (capped exponential backoff with jitter, a server's Retry-After honoured
when it is short), translating transport failures into errors that say whether they are
transient and whether repeating the request is safe, and redacting what a server says
before it becomes an error message. A subclass says how to build its requests and how
to read its service's answers and errors. `settings_cached` gives each a process-wide
instance that is rebuilt when its settings change (tests override them)."""

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import _lru_cache_wrapper, lru_cache
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import requests
from django.core.signals import setting_changed
from django.db import connection
from requests.adapters import BaseAdapter, HTTPAdapter

from multichannel.metrics import OUTSIDE_CALLS, OUTSIDE_SECONDS, operation_label
from multichannel.redaction import redact

# Adapters for URL schemes served in process (the sandbox registers `sandbox://`).
_scheme_adapters: dict[str, Callable[[], BaseAdapter]] = {}


def scheme_adapter_register(scheme: str, factory: Callable[[], BaseAdapter]) -> None:
    _scheme_adapters[scheme] = factory


def pooled_session(base_url: str) -> requests.Session:
    """A pooled session without retries of its own (each client decides what to retry,
    from its service's error semantics)."""
    session = requests.Session()
    # Room for every worker thread's connection (a consumer may run 64 or more): a full
    # pool discards connections, and each new one to MKA1 costs a TLS handshake. The pool
    # only ever holds as many as were in use at once.
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=256, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.trust_env = False  # no proxy or netrc credentials picked up implicitly
    scheme = base_url.split("://", 1)[0]
    if scheme in _scheme_adapters:
        session.mount(f"{scheme}://", _scheme_adapters[scheme]())
    return session


class ServiceError(Exception):
    """A failed call to an outside service. `transient`: trying again later may
    succeed. `retry_safe`: False when the request may have reached the service and is
    not idempotent, so repeating it at once could do it twice (a second reply, a second
    stored response); the caller then decides when to try again."""

    transient: bool = False  # per class for most services; the Graph API says per error

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: Any = None,
        retry_after: float | None = None,
        retry_safe: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.retry_safe = retry_safe


class TransportFailure:
    """How a request failed before any answer came back."""

    CONNECT = "connect"  # never reached the server: always safe to repeat
    TIMEOUT = "timeout"  # sent, no answer in time
    LOST = "lost"  # the connection broke after sending
    OTHER = "other"  # refused by the HTTP library (e.g. an invalid header value)


class ServiceClient:
    """The shared seam; `name` appears in log lines and error messages."""

    name: ClassVar[str] = "service"

    def __init__(
        self,
        *,
        base_url: str,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        secret: str = "",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # This client's own credential, redacted from what servers say even when it is
        # not the one in settings.
        self._secret = secret
        self.timeout = (connect_timeout, timeout)
        self.max_retries = max_retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self._sleep = sleep
        self.session = session or pooled_session(self.base_url)

    def wait(self, seconds: float) -> None:
        """Pause between attempts; tests swap `_sleep` so that nothing really waits."""
        self._sleep(seconds)

    # -- what a subclass says -------------------------------------------------------

    def transport_error(
        self, what: str, failure: str, *, retry_safe: bool, detail: str = ""
    ) -> ServiceError:
        """The error for a request that got no answer (see TransportFailure)."""
        raise NotImplementedError

    def retry_now(self, error: ServiceError) -> bool:
        """Whether to repeat the request in this call (after a short pause) rather than
        leaving the retry to the caller."""
        return error.transient and error.retry_safe

    # -- the seam ---------------------------------------------------------------------

    def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        read: Callable[[requests.Response], Any],
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        auth: requests.auth.AuthBase | None = None,
        idempotent: bool = False,
        stream: bool = False,
        retries: int | None = None,
    ) -> Any:
        """Send, retrying what `retry_now` allows (up to `retries`, default max_retries);
        `read` turns each response into the result or a ServiceError. Raises the last
        error. With `stream`, `read` gets the response before its body is read (and
        must close it)."""
        limit = self.max_retries if retries is None else retries
        attempt = 0
        while True:
            outcome = self._attempt(
                method, url, what, read, headers, data, params, auth, idempotent, stream
            )
            if not isinstance(outcome, ServiceError):
                return outcome
            if not self.retry_now(outcome) or attempt >= limit:
                raise outcome
            delay = self.delay(attempt, outcome.retry_after)
            if delay is None:  # the server asked for a longer pause than we block for
                raise outcome
            # Logged under the subclass's module (multichannel.mka1, whatsapp.graph).
            logging.getLogger(type(self).__module__).warning(
                "%s failed (%s), retry %d/%d in %.2fs",
                what,
                outcome,
                attempt + 1,
                limit,
                delay,
            )
            self._sleep(delay)
            attempt += 1

    def _attempt(
        self,
        method: str,
        url: str,
        what: str,
        read: Callable[[requests.Response], Any],
        headers: Mapping[str, str] | None,
        data: bytes | None,
        params: Mapping[str, str] | None,
        auth: requests.auth.AuthBase | None,
        idempotent: bool,
        stream: bool,
    ) -> Any:
        # Named by the path below the service's base URL (the same in every deployment).
        path = urlsplit(url).path
        base = urlsplit(self.base_url).path
        operation = operation_label(method, path[len(base) :] if path.startswith(base) else path)
        connection_hand_back()
        started = time.monotonic()
        try:
            response = self.session.request(
                method,
                url,
                headers=dict(headers or {}),
                data=data,
                params=params,
                auth=auth,
                timeout=self.timeout,
                allow_redirects=False,
                stream=stream,
            )
        except requests.RequestException as exc:
            self._observe(operation, started, f"error:{type(exc).__name__}")
            return self._transport_failure(what, exc, idempotent)
        self._observe(operation, started, str(response.status_code))
        return read(response)

    def _observe(self, operation: str, started: float, status: str) -> None:
        OUTSIDE_SECONDS.labels(self.name, operation).observe(time.monotonic() - started)
        OUTSIDE_CALLS.labels(self.name, operation, status).inc()

    def _transport_failure(
        self, what: str, exc: requests.RequestException, idempotent: bool
    ) -> ServiceError:
        if isinstance(exc, requests.ConnectTimeout):
            return self.transport_error(what, TransportFailure.CONNECT, retry_safe=True)
        if isinstance(exc, requests.Timeout):
            return self.transport_error(what, TransportFailure.TIMEOUT, retry_safe=idempotent)
        if isinstance(exc, requests.ConnectionError):
            refused = _never_reached_server(exc)
            return self.transport_error(
                what,
                TransportFailure.CONNECT if refused else TransportFailure.LOST,
                retry_safe=refused or idempotent,
            )
        # Named by type only: the text of some (an invalid header value) quotes the
        # request's headers, a key among them.
        return self.transport_error(
            what, TransportFailure.OTHER, retry_safe=False, detail=type(exc).__name__
        )

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds before attempt `attempt + 1`: the server's Retry-After if it is within
        `backoff_max` (None if longer: not worth blocking for), else capped exponential
        backoff with jitter."""
        if retry_after is not None:
            return retry_after if retry_after <= self.backoff_max else None
        cap = min(self.backoff_max, self.backoff * (2**attempt))
        return random.uniform(cap / 2, cap)  # noqa: S311 (jitter, not cryptography)

    def server_text(self, text: str) -> str:
        """What a server said, fit to put in an error message (it may echo a secret)."""
        if self._secret:
            text = text.replace(self._secret, "[redacted]")
        return redact(text)


def connection_hand_back() -> None:
    """Before a call that may take seconds: with a connection pool (PostgreSQL with
    DATABASE_POOL_MAX_SIZE) and no transaction open, give this thread's database
    connection back to the pool; its next query takes one again. Without a pool the
    thread keeps its connection (reopening one would cost more than the wait saves)."""
    if database_pooled() and not connection.in_atomic_block:
        connection.close()


def database_pooled() -> bool:
    return bool(connection.settings_dict["OPTIONS"].get("pool"))


def _never_reached_server(exc: requests.ConnectionError) -> bool:
    """True when the request was certainly not delivered (refused, DNS), so a retry
    cannot duplicate it; false when the connection broke after sending."""
    reason = exc.args[0] if exc.args else None
    inner = getattr(reason, "reason", reason)
    name = type(inner).__name__
    return name in ("NewConnectionError", "NameResolutionError", "ConnectTimeoutError")


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


Client = TypeVar("Client")


def settings_cached(
    *prefixes: str,
) -> Callable[[Callable[[], Client]], "_lru_cache_wrapper[Client]"]:
    """A process-wide instance from `factory`, built on first use and rebuilt after any
    setting starting with one of `prefixes` (or SANDBOX) changes."""

    def decorate(factory: Callable[[], Client]) -> "_lru_cache_wrapper[Client]":
        cached = lru_cache(maxsize=1)(factory)

        def reset(*, setting: str, **kwargs: Any) -> None:
            if setting.startswith(prefixes) or setting == "SANDBOX":
                cached.cache_clear()

        setting_changed.connect(reset, weak=False)
        return cached

    return decorate
