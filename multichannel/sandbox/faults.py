"""Telling the sandbox to misbehave: planned failures and delays, shared across
processes through the database (the web server and the worker see the same plan)."""

from typing import Any

from django.db import transaction
from django.db.models import F, Q

from multichannel.sandbox.models import SandboxFault


def fault_inject(
    endpoint: str,
    *,
    status: int | None = None,
    delay_ms: int = 0,
    times: int = 1,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> SandboxFault:
    """Make the next `times` calls to `endpoint` ("responses.create", "*", ...) fail
    with `status` and/or wait `delay_ms` first. A status of 200 with a `body` replaces
    the answer outright."""
    if status is None and not delay_ms:
        raise ValueError("a fault needs a status, a delay, or both")
    if times < 1:
        raise ValueError("times must be at least 1")
    return SandboxFault.objects.create(
        endpoint=endpoint,
        status=status,
        delay_ms=delay_ms,
        remaining=times,
        body=body,
        headers=headers or {},
    )


def fault_take(endpoint: str) -> SandboxFault | None:
    """Consume one planned fault for this endpoint, if any is left."""
    with transaction.atomic():
        fault = (
            SandboxFault.objects.filter(Q(endpoint=endpoint) | Q(endpoint="*"), remaining__gt=0)
            .order_by("id")
            .first()
        )
        if fault is None:
            return None
        SandboxFault.objects.filter(pk=fault.pk).update(remaining=F("remaining") - 1)
    return fault


def faults_clear() -> None:
    SandboxFault.objects.all().delete()
