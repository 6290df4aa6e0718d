"""One redaction for every text that is stored or logged: bodies and errors that
outside services send back, exception messages, log lines.

It removes the values of our own secrets wherever they appear (a Graph API error that
echoes the access token, an HTTP library error quoting a header), one-time sign-in
tokens in `/signin/<token>` paths, and anything shaped like a bearer token or a Meta
access token, whoever's it is."""

import re
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

REDACTED = "[redacted]"
# Setting names whose values must never be shown.
SECRET_SETTINGS = (
    "SECRET_KEY",
    "MKA1_API_KEY",
    "WHATSAPP_TOKEN",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
    "AUDIT_SIGNING_KEY",
    "MEDIA_S3_SECRET_KEY",
    "METRICS_TOKEN",
)
# Shorter values are too likely to occur by chance to replace everywhere.
_MIN_SECRET_LENGTH = 8
_PATTERNS = (
    (re.compile(r"(/signin/)[^/?#\s\"'<>]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)(\bbearer\s+)[^\s\"',;]+"), rf"\1{REDACTED}"),
    # Meta access tokens (user, system-user and page tokens start with EAA).
    (re.compile(r"\bEAA[A-Za-z0-9]{20,}"), REDACTED),
)


def _secrets() -> tuple[str, ...]:
    # A process without Django settings (gunicorn's master) knows no secrets of ours.
    return _configured_secrets() if settings.configured else ()


@lru_cache(maxsize=1)
def _configured_secrets() -> tuple[str, ...]:
    values = {str(getattr(settings, name, "") or "") for name in SECRET_SETTINGS}
    # Longest first, so a secret that contains another is replaced whole.
    return tuple(sorted((v for v in values if len(v) >= _MIN_SECRET_LENGTH), key=len, reverse=True))


@receiver(setting_changed)
def _forget_secrets(*, setting: str, **kwargs: Any) -> None:
    if setting in SECRET_SETTINGS:
        _configured_secrets.cache_clear()


def redact(text: str) -> str:
    """`text` without our secrets, sign-in tokens or bearer/access tokens."""
    for secret in _secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any) -> Any:
    """A JSON-like value (an error body) with every string in it redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    return value


def exception_text(exc: BaseException) -> str:
    """How an unexpected exception is stored or shown: its type and redacted message."""
    message = redact(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
