"""Telling the sandbox to misbehave: planned failures and delays, shared across
processes through the database (the web server and the worker see the same plan)."""

import json
from typing import Any

from django.db import transaction
from django.db.models import F, Q

from multichannel.sandbox.models import SandboxFault

# The one endpoint with a body worth cutting short.
TRUNCATABLE = "graph.media.download"


def fault_inject(
    endpoint: str,
    *,
    status: int | None = None,
    delay_ms: int = 0,
    times: int = 1,
    body: Any = None,
    headers: dict[str, str] | None = None,
    truncate: bool = False,
) -> SandboxFault:
    """Make the next `times` calls to `endpoint` ("responses.create", "*", ...) fail
    with `status` and/or wait `delay_ms` first. A status of 200 with a `body` replaces
    the answer outright. `truncate` (media downloads only) sends the full Content-Length
    but only part of the body, then drops the connection: a download failing mid-stream."""
    if truncate:
        if endpoint != TRUNCATABLE:
            raise ValueError(f"only {TRUNCATABLE} can be truncated")
        if status is not None:
            raise ValueError("a truncated download answers 200; it takes no status")
    elif status is None and not delay_ms:
        raise ValueError("a fault needs a status, a delay, or both")
    if delay_ms < 0:
        raise ValueError("delay_ms cannot be negative")
    if times < 1:
        raise ValueError("times must be at least 1")
    if status is not None and 200 <= status < 300 and body is None:
        # A success needs something to say; an error body under 2xx would look like a
        # malformed MKA1 object rather than a planned failure.
        raise ValueError("a 2xx fault needs a body to answer with")
    return SandboxFault.objects.create(
        endpoint=endpoint,
        status=status,
        delay_ms=delay_ms,
        remaining=times,
        body=None if body is None else json.dumps(body, separators=(",", ":")),
        headers=headers or {},
        truncate=truncate,
    )


def fault_take(endpoint: str) -> SandboxFault | None:
    """Consume one planned fault for this endpoint, if any is left."""
    while True:
        fault = (
            SandboxFault.objects.filter(Q(endpoint=endpoint) | Q(endpoint="*"), remaining__gt=0)
            .order_by("id")
            .first()
        )
        if fault is None:
            return None
        # Conditional decrement: when web and worker race for the last use of a fault,
        # one of them wins it and the other looks again instead of going below zero.
        taken = SandboxFault.objects.filter(pk=fault.pk, remaining__gt=0).update(
            remaining=F("remaining") - 1
        )
        if taken:
            return fault


def faults_clear() -> int:
    """Forget every planned fault; returns how many still had calls left to spoil."""
    with transaction.atomic():
        pending = SandboxFault.objects.filter(remaining__gt=0).count()
        SandboxFault.objects.all().delete()
    return pending
