"""Shared helpers for the ledger's tests: recording events, running the audit commands,
signing checkpoints, and tampering with the database as its operator could."""

from collections.abc import Callable
from dataclasses import replace
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from audit.integrity import GENESIS_HASH, chain_hash
from audit.models import AuditEvent
from audit.services import audit_content_erase, audit_event_record
from audit.verification import Record, database_records, record_digest


def audit_event_statements() -> int:
    """What recording one event with a body costs inside a transaction (a test's, a
    turn's): no savepoint; the chain head read and locked (1), then on PostgreSQL one
    statement that moves it on and inserts the event and its body (1); elsewhere the
    body (1), the event (1) and the head moved on (1)."""
    return 2 if connection.vendor == "postgresql" else 4


def record(n: int = 1, **overrides: Any) -> list[AuditEvent]:
    first = AuditEvent.objects.count()
    return [
        audit_event_record(
            **{
                "channel": "whatsapp",
                "action": "responses.create",
                "end_user_id": "user_1",
                "response_id": f"resp_{i}",
                "conversation_id": "conv_1",
                "full_response": {"id": f"resp_{i}", "output_text": f"answer {i}"},
                "api_key_fingerprint": "sha256:0123456789abcdef",
                "context": {"whatsapp_message_id": f"wamid.{i}"},
                **overrides,
            }
        )
        for i in range(first, first + n)
    ]


def erase(end_user_id: str) -> AuditEvent:
    """What an erasure does to the ledger: its `erasure` event, then the person's
    earlier events lose their content (multichannel.privacy runs this as its last step)."""
    event = audit_event_record(
        channel="operator",
        action="erasure",
        end_user_id=end_user_id,
        api_key_fingerprint="sha256:0123456789abcdef",
        context={"reason": "case 42"},
    )
    audit_content_erase(before_sequence=event.sequence, end_user_ids=[end_user_id])
    return event


def run(command: str, *args: str) -> str:
    """stdout of a command that succeeds."""
    out = StringIO()
    call_command(command, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def run_both(command: str, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(command, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def failure(command: str, *args: str) -> CommandError:
    """The error of a command that fails (its message and returncode)."""
    with pytest.raises(CommandError) as caught:
        call_command(command, *args, stdout=StringIO(), stderr=StringIO())
    return caught.value


def checkpoint(path: Path) -> Path:
    """Sign a checkpoint now and keep it in a file, as an auditor would."""
    path.write_text(run("audit_checkpoint"), encoding="utf-8")
    return path


def export(path: Path, *args: str) -> Path:
    call_command("export_audit", "--with-integrity", "-o", str(path), *args, stderr=StringIO())
    return path


def raw_sql(sql: str, params: list[Any] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])


def rewrite_history(change: Callable[[list[Record]], list[Record]]) -> None:
    """What an operator with DDL rights can do (triggers dropped first): rewrite the
    events into `change(events)`, then recompute every content digest, renumber the
    sequences and recompute the whole hash chain and the head, so that the chain alone
    verifies. Only columns of the event table are rewritten (bodies stay)."""
    pks = list(AuditEvent.objects.order_by("sequence").values_list("pk", flat=True))
    by_hash = {r.hash: pk for pk, r in zip(pks, database_records(), strict=True)}
    changed = change(list(database_records()))
    kept = {by_hash[r.hash] for r in changed}
    for pk in pks:  # out of the way of the unique sequence and hash columns
        raw_sql("UPDATE audit_auditevent SET sequence = %s, hash = %s WHERE id = %s",
                [-pk, f"moving-{pk}", pk])  # fmt: skip
    previous = GENESIS_HASH
    for sequence, event in enumerate(changed, start=1):
        digest = record_digest(replace(event, full_response=event.full_response or "null"))
        link = chain_hash(sequence=sequence, previous_hash=previous, digest=digest)
        raw_sql(
            "UPDATE audit_auditevent SET sequence = %s, channel = %s, action = %s, "
            "end_user_id = %s, content_digest = %s, previous_hash = %s, hash = %s "
            "WHERE id = %s",
            [sequence, event.channel, event.action, event.end_user_id, digest, previous, link,
             by_hash[event.hash]],
        )  # fmt: skip
        previous = link
    for pk in set(pks) - kept:
        raw_sql("DELETE FROM audit_auditevent WHERE id = %s", [pk])
    raw_sql("UPDATE audit_auditchainhead SET sequence = %s, hash = %s", [len(changed), previous])
