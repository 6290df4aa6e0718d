"""System checks for the audit settings (ids audit.E0xx / audit.W0xx)."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from audit.checkpoints import SigningKeyError, log_origin, signing_key
from audit.notes import valid_key_name


@register()
def check_audit_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    key = None
    try:
        key = signing_key()
    except SigningKeyError as exc:
        errors.append(
            Error(str(exc), hint="Make one with manage.py audit_keygen.", id="audit.E001")
        )
    if settings.AUDIT_LOG_ORIGIN and not valid_key_name(settings.AUDIT_LOG_ORIGIN):
        errors.append(
            Error(
                "AUDIT_LOG_ORIGIN must not be empty or contain spaces or '+'.",
                hint="A schema-less URL such as multichannel.example.com/audit.",
                id="audit.E002",
            )
        )
    elif key is not None and log_origin(key) != key.name:
        errors.append(
            Warning(
                f"AUDIT_LOG_ORIGIN ({settings.AUDIT_LOG_ORIGIN}) differs from the signing "
                f"key's name ({key.name}).",
                hint="c2sp.org/tlog-checkpoint: the key name should match the origin; "
                "unset AUDIT_LOG_ORIGIN to use the key's name.",
                id="audit.W001",
            )
        )
    if settings.AUDIT_CHECKPOINT_MINUTES <= 0:
        errors.append(Error("AUDIT_CHECKPOINT_MINUTES must be a positive number.", id="audit.E003"))
    if settings.AUDIT_PUBLISH_TIMEOUT <= 0:
        errors.append(
            Error("AUDIT_PUBLISH_TIMEOUT must be a positive number of seconds.", id="audit.E007")
        )
    for name, urls in (
        ("AUDIT_WITNESS_URLS", settings.AUDIT_WITNESS_URLS),
        ("AUDIT_TSA_URL", [settings.AUDIT_TSA_URL] if settings.AUDIT_TSA_URL else []),
    ):
        for url in urls:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                errors.append(
                    Error(f"{name} has a value that is not an http(s) URL.", id="audit.E004")
                )
    if settings.AUDIT_TSA_URL and not Path(settings.AUDIT_TSA_CA_FILE or "").is_file():
        errors.append(
            Error(
                "AUDIT_TSA_URL is set but AUDIT_TSA_CA_FILE is not a readable file.",
                hint="Time-stamp tokens are verified against the TSA's root certificate(s) "
                "(PEM) before they are stored.",
                id="audit.E005",
            )
        )
    if settings.AUDIT_CHECKPOINT_DIR and not Path(settings.AUDIT_CHECKPOINT_DIR).is_dir():
        # A warning: the mount may appear later; until then publication fails visibly.
        errors.append(
            Warning(
                f"AUDIT_CHECKPOINT_DIR ({settings.AUDIT_CHECKPOINT_DIR}) is not a directory.",
                hint="Checkpoints are not written there until it exists (/healthz shows it).",
                id="audit.W003",
            )
        )
    if (
        settings.AUDIT_WITNESS_URLS or settings.AUDIT_CHECKPOINT_DIR or settings.AUDIT_TSA_URL
    ) and (not settings.AUDIT_SIGNING_KEY):
        errors.append(
            Warning(
                "Checkpoint publication is configured but AUDIT_SIGNING_KEY is not set, "
                "so there is nothing to publish.",
                id="audit.W002",
            )
        )
    return errors
