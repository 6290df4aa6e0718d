"""Append-only at every layer, a hash chain that verifies, and tampering that is caught."""

import json
from collections.abc import Callable, Sequence
from functools import partial
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from audit import models as audit_models
from audit.models import AuditChainHead, AuditEvent
from audit.services import audit_event_record
from audit.verification import verify_database
from tests.support.threads import at_once

pytestmark = pytest.mark.django_db


def record(n: int = 1, **overrides) -> list[AuditEvent]:
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
        for i in range(n)
    ]


def verify(*args: str) -> str:
    out = StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def failure(*args: str) -> str:
    with pytest.raises(CommandError) as caught:
        verify(*args)
    return str(caught.value)


def raw_sql(sql: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])


# --- append-only ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditevent SET channel = 'webapp'",
        "UPDATE audit_auditevent SET full_response_sha256 = NULL WHERE sequence = 1",
        # Only erasure's exact shape passes: both fields, and nothing else changed.
        "UPDATE audit_auditevent SET context = '{}' WHERE sequence = 1",
        "UPDATE audit_auditevent SET context = '{}', full_response_sha256 = NULL, "
        "response_id = NULL WHERE sequence = 1",
        "UPDATE audit_auditevent SET context = '{\"a\":1}', full_response_sha256 = NULL "
        "WHERE sequence = 1",
        "UPDATE audit_auditevent SET context = '{}', full_response_sha256 = NULL, "
        "content_digest = 'x' WHERE sequence = 1",
        "DELETE FROM audit_auditevent",
        "DELETE FROM audit_auditevent WHERE sequence = 1",
    ],
)
def test_the_database_refuses_to_rewrite_history(sql: str) -> None:
    record(2)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        raw_sql(sql)
    assert AuditEvent.objects.count() == 2
    assert verify().startswith("OK: 2 events")


def test_the_table_cannot_be_emptied() -> None:
    record(1)
    # PostgreSQL's TRUNCATE bypasses row triggers, so it has a statement trigger of its
    # own; SQLite has no TRUNCATE (its "truncate optimisation" still fires the trigger).
    statement = (
        "TRUNCATE audit_auditevent"
        if connection.vendor == "postgresql"
        else ("DELETE FROM audit_auditevent")
    )
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        raw_sql(statement)
    assert AuditEvent.objects.count() == 1


def test_the_database_lets_only_erasure_remove_content() -> None:
    record(2)
    raw_sql(
        "UPDATE audit_auditevent SET context = '{}', full_response_sha256 = NULL WHERE sequence = 1"
    )
    first = AuditEvent.objects.get(sequence=1)
    assert (first.context, first.body_id) == ({}, None)
    # ...never from a record of compliance itself (an erasure, a hold).
    audit_event_record(
        channel="operator", action="erasure", end_user_id="user_1", context={"reason": "x"}
    )
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        raw_sql(
            "UPDATE audit_auditevent SET context = '{}', full_response_sha256 = NULL "
            "WHERE sequence = 3"
        )
    assert AuditEvent.objects.get(sequence=3).context == {"reason": "x"}


def test_inserting_is_still_allowed_at_the_database_level() -> None:
    record(3)
    assert list(AuditEvent.objects.values_list("sequence", flat=True)) == [1, 2, 3]


# --- the chain ----------------------------------------------------------------------------


def test_each_event_is_chained_to_the_previous_one() -> None:
    first, second, third = record(3)
    assert (first.sequence, second.sequence, third.sequence) == (1, 2, 3)
    assert first.previous_hash == "0" * 64
    assert second.previous_hash == first.hash
    assert third.previous_hash == second.hash
    head = AuditChainHead.objects.get()
    assert (head.sequence, head.hash) == (3, third.hash)


def test_a_clean_store_verifies() -> None:
    events = record(5)
    assert verify() == f"OK: 5 events, chain intact; last sequence 5, hash {events[-1].hash}\n"


def test_an_empty_store_verifies() -> None:
    assert verify().startswith("OK: 0 events")


def test_a_rolled_back_event_leaves_no_gap() -> None:
    record(1)

    def failing_work() -> None:
        with transaction.atomic():
            record(1)
            raise RuntimeError("the surrounding work failed")

    with pytest.raises(RuntimeError):
        failing_work()
    record(1)
    assert list(AuditEvent.objects.values_list("sequence", flat=True)) == [1, 2]
    assert verify().startswith("OK: 2 events")


def assert_one_chain_from(writers: Sequence[Callable[[], None]], *, events: int) -> None:
    """Run the writers at once: each finishes, and the ledger is one gapless chain of
    `events` that verifies."""
    assert at_once(*writers) == [None] * len(writers)
    assert list(AuditEvent.objects.values_list("sequence", flat=True)) == list(range(1, events + 1))
    assert verify().startswith(f"OK: {events} events")


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_one_linear_chain() -> None:
    def write(worker: int) -> None:
        for i in range(15):
            audit_event_record(
                channel="whatsapp",
                action="responses.create",
                end_user_id=f"user_{worker}",
                response_id=f"resp_{worker}x{i}",
            )

    assert_one_chain_from([partial(write, w) for w in range(4)], events=60)


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_inside_transactions_keep_one_linear_chain() -> None:
    """As a turn records: several events per transaction, each writer holding the head
    until it commits, one transaction rolled back in three."""

    def write(worker: int) -> None:
        for i in range(6):
            try:
                with transaction.atomic():
                    for j in range(2):
                        audit_event_record(
                            channel="webapp",
                            action="responses.get",
                            end_user_id=f"user_{worker}",
                            response_id=f"resp_{worker}x{i}x{j}",
                            full_response={"id": f"resp_{worker}x{i}x{j}"},
                        )
                    if i % 3 == 2:
                        raise RuntimeError("the surrounding work failed")
            except RuntimeError:
                pass

    assert_one_chain_from([partial(write, w) for w in range(4)], events=32)
    assert AuditChainHead.objects.get().sequence == 32


@pytest.mark.django_db(transaction=True)
def test_writers_with_and_without_transactions_at_once_keep_one_linear_chain() -> None:
    """Retrievals (no transaction: on PostgreSQL the unlocked append) racing turns (a
    transaction holding the head until it commits)."""

    def alone(worker: int) -> None:
        for i in range(12):
            audit_event_record(
                channel="webapp", action="responses.get", end_user_id=f"user_{worker}",
                response_id=f"resp_{worker}x{i}", full_response={"id": f"resp_{worker}x{i}"},
            )  # fmt: skip

    def in_turns(worker: int) -> None:
        for i in range(6):
            with transaction.atomic():
                for j in range(2):
                    audit_event_record(
                        channel="whatsapp", action="responses.create",
                        end_user_id=f"user_{worker}", response_id=f"resp_{worker}x{i}x{j}",
                    )  # fmt: skip

    writers = [partial(alone, 0), partial(alone, 1), partial(in_turns, 2), partial(in_turns, 3)]
    assert_one_chain_from(writers, events=48)


@pytest.mark.django_db(transaction=True)
def test_an_event_whose_head_moved_meanwhile_is_chained_after_the_new_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another writer appended between our read of the head and our append: nothing of
    ours chained to the old head is kept, and ours follows theirs. (Only PostgreSQL
    appends without the lock, and only outside a transaction; elsewhere the head is
    read under it.)"""
    record(1)
    if connection.vendor != "postgresql":
        real_head = audit_models.chain_head

        def locked_only(connection: object, *, lock: bool) -> object:
            assert lock
            return real_head(connection, lock=lock)  # type: ignore[arg-type]

        monkeypatch.setattr(audit_models, "chain_head", locked_only)
        record(1)
        assert verify().startswith("OK: 2 events")
        return
    real_chained = audit_models._chained
    stale: list[AuditEvent] = []

    def another_writer_first(*args: object) -> AuditEvent:
        event = real_chained(*args)  # type: ignore[arg-type]
        if not stale:
            stale.append(event)
            record(1, response_id="resp_theirs")
        return event

    monkeypatch.setattr(audit_models, "_chained", another_writer_first)
    ours = record(1, response_id="resp_ours")[0]
    assert stale[0].sequence == 2
    assert stale[0].pk is None
    assert list(AuditEvent.objects.values_list("sequence", "response_id")) == [
        (1, "resp_0"),
        (2, "resp_theirs"),
        (3, "resp_ours"),
    ]
    assert ours.sequence == 3
    assert ours.pk == AuditEvent.objects.get(sequence=3).pk
    assert not AuditEvent.objects.filter(hash=stale[0].hash).exists()
    assert verify().startswith("OK: 3 events")


def test_a_ledger_started_by_another_writer_between_two_reads_is_not_taken_for_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first look at the head ran before a concurrent writer committed the ledger's
    head and first event, the look at the events after: that is a race, not a lost head
    (seen as a LedgerUnavailableError under four concurrent first writers)."""
    from audit.models import AuditChainHeadQuerySet

    audit_event_record(channel="whatsapp", action="responses.create", end_user_id="user_1")
    real_first = AuditChainHeadQuerySet.first
    looks = []

    def first_look_too_early(self: AuditChainHeadQuerySet) -> AuditChainHead | None:
        looks.append(self)
        return None if len(looks) == 1 else real_first(self)

    monkeypatch.setattr(AuditChainHeadQuerySet, "first", first_look_too_early)
    # The append's own first read of the head came too early as well.
    real_head = audit_models.chain_head
    reads: list[bool] = []

    def first_read_too_early(connection: Any, *, lock: bool) -> tuple[int, str] | None:
        reads.append(lock)
        return None if len(reads) == 1 else real_head(connection, lock=lock)

    monkeypatch.setattr(audit_models, "chain_head", first_read_too_early)
    audit_event_record(channel="whatsapp", action="responses.create", end_user_id="user_2")
    assert len(looks) == 2
    assert list(AuditEvent.objects.values_list("sequence", flat=True)) == [1, 2]


# --- tampering in the database (triggers dropped first) ------------------------------------


def test_an_edited_event_is_caught(without_triggers) -> None:
    record(4)
    raw_sql(
        "UPDATE audit_auditbody SET text = %s WHERE digest = %s",
        ['{"id":"resp_2","output_text":"forged"}', AuditEvent.objects.get(sequence=3).body_id],
    )
    assert failure() == "FAIL at sequence 3: changed (content does not match its digest)"


def test_an_edit_with_a_recomputed_digest_is_caught_by_the_hash(without_triggers) -> None:
    from audit.integrity import content_digest, format_timestamp

    events = record(3)
    target = events[1]
    forged_digest = content_digest(
        timestamp=format_timestamp(target.timestamp),
        channel="webapp",
        action=target.action,
        end_user_id=target.end_user_id,
        response_id=target.response_id,
        conversation_id=target.conversation_id,
        previous_response_id=target.previous_response_id,
        full_response=target.full_response,
        api_key_fingerprint=target.api_key_fingerprint,
        context=target.context,
    )
    raw_sql(
        "UPDATE audit_auditevent SET channel = 'webapp', content_digest = %s WHERE sequence = 2",
        [forged_digest],
    )
    assert failure() == "FAIL at sequence 2: changed (hash does not match its sequence and digest)"


def test_a_deleted_event_is_caught(without_triggers) -> None:
    record(4)
    raw_sql("DELETE FROM audit_auditevent WHERE sequence = 2")
    assert failure() == "FAIL at sequence 2: missing or out of order (found sequence 3 next)"


def test_a_deleted_last_event_is_caught_by_the_head(without_triggers) -> None:
    record(4)
    raw_sql("DELETE FROM audit_auditevent WHERE sequence = 4")
    assert failure() == (
        "FAIL at sequence 4: missing (the chain head is at sequence 4, the last event is 3)"
    )


def test_swapped_events_are_caught_as_reordered(without_triggers) -> None:
    record(4)
    raw_sql("UPDATE audit_auditevent SET sequence = -2 WHERE sequence = 2")
    raw_sql("UPDATE audit_auditevent SET sequence = 2 WHERE sequence = 3")
    raw_sql("UPDATE audit_auditevent SET sequence = 3 WHERE sequence = -2")
    assert failure() == "FAIL at sequence 2: reordered (it was chained after sequence 3)"


def test_verdict_names_the_first_bad_sequence(without_triggers) -> None:
    record(6)
    raw_sql("UPDATE audit_auditevent SET action = 'x' WHERE sequence IN (4, 5)")
    verdict = verify_database()
    assert (verdict.ok, verdict.at_sequence, verdict.checked) == (False, 4, 3)


# --- exports, verified offline ----------------------------------------------------------------


def export(tmp_path: Path, *args: str) -> Path:
    path = tmp_path / "audit.jsonl"
    call_command(
        "export_audit", "--with-integrity", "--output", str(path), *args, stderr=StringIO()
    )
    return path


def test_the_default_export_stays_the_seed_format() -> None:
    record(1)
    out = StringIO()
    call_command("export_audit", stdout=out)
    line = json.loads(out.getvalue().splitlines()[0])
    assert list(line) == [
        "timestamp",
        "channel",
        "action",
        "end_user_id",
        "response_id",
        "conversation_id",
        "previous_response_id",
        "full_response",
    ]


def test_integrity_fields_follow_the_seed_keys(tmp_path: Path) -> None:
    (event,) = record(1)
    line = json.loads(export(tmp_path).read_text().splitlines()[0])
    assert list(line)[8:] == [
        "sequence",
        "api_key_fingerprint",
        "context",
        "content_digest",
        "previous_hash",
        "hash",
    ]
    assert (line["sequence"], line["hash"]) == (1, event.hash)


def test_a_full_export_verifies_offline(tmp_path: Path) -> None:
    events = record(5, full_response={"id": "resp_x", "n": 1e5, "text": "naïve ☕"})
    path = export(tmp_path)
    assert verify("--file", str(path)) == (
        f"OK: 5 events, chain intact; last sequence 5, hash {events[-1].hash}\n"
    )


def _tamper(path: Path, change) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(change(lines)), encoding="utf-8")


def test_an_edited_byte_in_an_export_is_caught(tmp_path: Path) -> None:
    record(3)
    path = export(tmp_path)
    data = bytearray(path.read_bytes())
    at = data.index(b"answer 1") + len("answer ")
    data[at] = ord("7")
    path.write_bytes(bytes(data))
    assert failure("--file", str(path)) == (
        "FAIL at sequence 2: changed (content does not match its digest)"
    )


def test_a_deleted_line_is_caught(tmp_path: Path) -> None:
    record(4)
    path = export(tmp_path)
    _tamper(path, lambda lines: lines[:1] + lines[2:])
    assert "FAIL at sequence 2: missing" in failure("--file", str(path))


def test_reordered_lines_are_caught(tmp_path: Path) -> None:
    record(4)
    path = export(tmp_path)
    _tamper(path, lambda lines: [lines[0], lines[2], lines[1], lines[3]])
    assert "FAIL at sequence 2" in failure("--file", str(path))


def test_an_inserted_line_is_caught(tmp_path: Path) -> None:
    record(3)
    path = export(tmp_path)

    def insert(lines: list[str]) -> list[str]:
        forged = json.loads(lines[1])
        forged["full_response"] = {"id": "resp_forged"}
        return [lines[0], lines[1], json.dumps(forged, separators=(",", ":")) + "\n", lines[2]]

    _tamper(path, insert)
    assert "FAIL at sequence 2: reordered or duplicated" in failure("--file", str(path))


def test_a_partial_export_verifies_with_partial(tmp_path: Path) -> None:
    record(2)
    record(2, end_user_id="user_2")
    path = export(tmp_path, "--end-user", "user_2")
    assert "missing" in failure("--file", str(path))
    assert verify("--file", str(path), "--partial").startswith("OK: 2 events")


def test_a_seed_format_export_cannot_be_verified(tmp_path: Path) -> None:
    record(1)
    path = tmp_path / "plain.jsonl"
    call_command("export_audit", "--output", str(path), stderr=StringIO())
    assert "no integrity fields" in failure("--file", str(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [("not json\n", "not valid JSON"), ('{"a":1}\n', "not an audit export line")],
)
def test_a_file_that_is_not_an_export_is_refused(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(content)
    assert message in failure("--file", str(path))


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    assert "cannot read" in failure("--file", str(tmp_path / "nope.jsonl"))
    assert "--partial only applies" in failure("--partial")


# --- bodies and the chain head ---------------------------------------------------------------


def test_a_body_retrieved_again_is_stored_once_and_exported_each_time(tmp_path: Path) -> None:
    from audit.models import AuditBody

    body = {"id": "resp_same", "output_text": "the same answer " * 50}
    record(1, action="responses.create", full_response=body)
    record(1, channel="webapp", action="responses.get", full_response=body)
    record(1, channel="webapp", action="responses.get", full_response=body)
    assert AuditEvent.objects.count() == 3
    assert AuditBody.objects.count() == 1
    lines = export(tmp_path).read_text().splitlines()
    assert [json.loads(line)["full_response"] for line in lines] == [body, body, body]
    assert verify().startswith("OK: 3 events")


def test_a_stored_body_cannot_be_changed_in_the_database() -> None:
    (event,) = record(1)
    with pytest.raises(DatabaseError, match="cannot be changed"), transaction.atomic():
        raw_sql("UPDATE audit_auditbody SET text = '{}' WHERE digest = %s", [event.body_id])


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM audit_auditchainhead",
        "UPDATE audit_auditchainhead SET sequence = 1",
        "UPDATE audit_auditchainhead SET sequence = 3",
    ],
)
def test_the_chain_head_cannot_be_deleted_or_moved_back(sql: str) -> None:
    record(3)
    with pytest.raises(DatabaseError, match="only moves forward"), transaction.atomic():
        raw_sql(sql)
    assert AuditChainHead.objects.get().sequence == 3


def test_a_lost_chain_head_stops_recording_instead_of_restarting_the_chain(
    without_triggers,
) -> None:
    from audit.models import LedgerUnavailableError

    record(2)
    raw_sql("DELETE FROM audit_auditchainhead")
    with pytest.raises(LedgerUnavailableError, match="chain head is missing"):
        record(1)
    assert AuditEvent.objects.count() == 2
    assert not AuditChainHead.objects.exists()
