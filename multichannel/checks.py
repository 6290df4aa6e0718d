"""System checks for contradictory or unusable configuration (stable ids)."""

import ipaddress
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, register

from multichannel.limits import rate_parse

CHAIN_MODES = ("both", "conversation", "previous_response_id")


@register()
def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    if settings.MKA1_CHAIN_MODE not in CHAIN_MODES:
        errors.append(
            Error(
                f"MKA1_CHAIN_MODE is {settings.MKA1_CHAIN_MODE!r}.",
                hint=f"Use one of: {', '.join(CHAIN_MODES)}.",
                id="multichannel.E001",
            )
        )
    if settings.SANDBOX and not settings.DEBUG:
        errors.append(
            Error(
                "SANDBOX is on while DEBUG is off.",
                hint="The sandbox fakes MKA1 and WhatsApp; unset SANDBOX in production.",
                id="multichannel.E002",
            )
        )
    scheme = urlsplit(settings.MKA1_BASE_URL).scheme
    if scheme == "sandbox" and not settings.SANDBOX:
        errors.append(
            Error(
                "MKA1_BASE_URL points at the in-process sandbox but SANDBOX is off.",
                hint="Set MKA1_BASE_URL to the MKA1 API gateway, e.g. https://apigw.mka1.com.",
                id="multichannel.E003",
            )
        )
    elif scheme not in ("http", "https", "sandbox"):
        errors.append(
            Error(
                f"MKA1_BASE_URL {settings.MKA1_BASE_URL!r} is not an http(s) URL.",
                id="multichannel.E004",
            )
        )
    for name in ("MKA1_TIMEOUT", "MKA1_CONNECT_TIMEOUT", "TURN_RETRY_SECONDS"):
        if getattr(settings, name) <= 0:
            errors.append(
                Error(f"{name} must be a positive number of seconds.", id="multichannel.E005")
            )
    if not settings.SANDBOX:
        for name in (
            "WHATSAPP_VERIFY_TOKEN",
            "WHATSAPP_APP_SECRET",
            "WHATSAPP_TOKEN",
            "WHATSAPP_PHONE_NUMBER_ID",
        ):
            if not getattr(settings, name):
                errors.append(
                    Error(
                        f"{name} is not set.",
                        hint="The WhatsApp channel needs it; see README, "
                        "'Pointing it at a real WhatsApp number'.",
                        id="multichannel.E010",
                    )
                )
    if settings.HUEY.get("immediate") and not settings.DEBUG:
        errors.append(
            Error(
                "HUEY_IMMEDIATE is on while DEBUG is off.",
                hint="Tasks would run inside the webhook request; leave HUEY_IMMEDIATE unset.",
                id="multichannel.E011",
            )
        )
    if settings.MKA1_MAX_RETRIES < 0:
        errors.append(Error("MKA1_MAX_RETRIES must be zero or more.", id="multichannel.E006"))
    if not settings.DEBUG and urlsplit(settings.SITE_URL).scheme != "https":
        errors.append(
            Error(
                f"SITE_URL {settings.SITE_URL!r} is not an https URL while DEBUG is off.",
                hint="Sign-in links carry a one-time token; set SITE_URL=https://<your host>.",
                id="multichannel.E012",
            )
        )
    backend = settings.CACHES["default"]["BACKEND"]
    if not settings.DEBUG and backend.endswith("LocMemCache") and settings.WEB_CONCURRENCY > 1:
        errors.append(
            Error(
                f"The cache is per-process memory while WEB_CONCURRENCY is "
                f"{settings.WEB_CONCURRENCY}: each web process would count rate limits alone.",
                hint="Set REDIS_URL, or CACHE_URL to a shared cache, or WEB_CONCURRENCY=1.",
                id="multichannel.E013",
            )
        )
    for network in settings.METRICS_ALLOWED_NETWORKS:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            errors.append(
                Error(
                    f"METRICS_ALLOWED_NETWORKS holds {network!r}, which is not a network.",
                    hint="Use CIDRs such as 10.0.0.0/8, separated by commas.",
                    id="multichannel.E014",
                )
            )
    days = settings.CONTENT_RETENTION_DAYS
    if days is not None and days < settings.MIN_RETENTION_DAYS:
        errors.append(
            Error(
                f"CONTENT_RETENTION_DAYS is {days}, under MIN_RETENTION_DAYS "
                f"({settings.MIN_RETENTION_DAYS}).",
                hint="Logs must be kept at least six months; unset CONTENT_RETENTION_DAYS to "
                "keep content, or set it to MIN_RETENTION_DAYS or more.",
                id="multichannel.E015",
            )
        )
    if settings.RETRY_DELAY_MAX_SECONDS <= 0:
        errors.append(
            Error("RETRY_DELAY_MAX_SECONDS must be a positive number.", id="multichannel.E007")
        )
    if settings.DATABASE_POOL_MAX_SIZE < 0 or settings.DATABASE_POOL_TIMEOUT <= 0:
        errors.append(
            Error(
                f"DATABASE_POOL_MAX_SIZE is {settings.DATABASE_POOL_MAX_SIZE} and "
                f"DATABASE_POOL_TIMEOUT {settings.DATABASE_POOL_TIMEOUT}.",
                hint="The pool's size is 0 (no pool) or more; its timeout a positive number "
                "of seconds.",
                id="multichannel.E017",
            )
        )
    for name in ("API_THROTTLE_READ", "API_THROTTLE_SEND"):
        try:
            rate_parse(getattr(settings, name))
        except ValueError as exc:
            errors.append(Error(f"{name}: {exc}.", id="multichannel.E016"))
    return errors
