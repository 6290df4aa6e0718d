"""Signed checkpoints: keys, `audit_checkpoint`, the stored tree growing only by new
events, the periodic task, and where auditors read the latest checkpoint."""

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit import merkle
from audit.checkpoints import checkpoint_create, checkpoint_tick
from audit.models import AuditCheckpoint, AuditTreeTile
from audit.notes import open_checkpoint, parse_signer_key, parse_verifier_key
from audit.tree import TileReader
from audit.verification import database_records, record_leaf
from tests.support.audit_ledger import failure, raw_sql, record, run, run_both

pytestmark = pytest.mark.django_db

User = get_user_model()


def streamed_root(size: int) -> bytes:
    builder = merkle.RootBuilder()
    for event in database_records():
        if builder.size < size:
            builder.push(record_leaf(event))
    return builder.root()


# --- keys ----------------------------------------------------------------------------------


def test_keygen_prints_a_private_and_a_public_key_named_after_the_site(settings) -> None:
    settings.SITE_URL = "https://multichannel.example.com"
    out, err = run_both("audit_keygen")
    private, public = out.splitlines()
    key = parse_signer_key(private)
    assert key.name == "multichannel.example.com/audit"
    assert parse_verifier_key(public) == key.verifier
    assert err == (
        "The first line is the private key: put it in AUDIT_SIGNING_KEY (or in a file that "
        "AUDIT_SIGNING_KEY names) and nowhere else. The second line is the public key: give "
        "it to your auditors.\n"
    )


def test_keygen_takes_a_name_and_refuses_one_with_a_space() -> None:
    assert run("audit_keygen", "--name", "logs.example/a").startswith("PRIVATE+KEY+logs.example/a+")
    error = failure("audit_keygen", "--name", "two words")
    assert (str(error), error.returncode) == (
        "key name 'two words' is empty or contains a space or '+'",
        2,
    )


def test_without_a_key_checkpoint_commands_say_so_and_exit_2(settings) -> None:
    settings.AUDIT_SIGNING_KEY = ""
    record(2)
    error = failure("audit_checkpoint")
    assert error.returncode == 2
    assert str(error) == (
        "AUDIT_SIGNING_KEY is not set, so no checkpoint can be signed "
        "(manage.py audit_keygen makes a key pair)"
    )
    assert checkpoint_tick() == "not configured"
    assert not AuditCheckpoint.objects.exists()


def test_the_key_may_be_a_file_and_surrounding_whitespace_is_ignored(
    settings, tmp_path: Path, audit_key
) -> None:
    path = tmp_path / "signing.key"
    path.write_text(f"\n  {audit_key.text}  \n\n")
    settings.AUDIT_SIGNING_KEY = f" {path} \n"
    record(1)
    assert open_checkpoint(run("audit_checkpoint"), audit_key.verifier).size == 1


def test_a_bad_key_is_a_one_line_error_that_never_quotes_it(settings, caplog) -> None:
    mangled = "PRIVATE+KEY+x+00000000+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    for value in (mangled, "/nonexistent/key-file"):
        settings.AUDIT_SIGNING_KEY = value
        error = failure("audit_checkpoint")
        assert error.returncode == 2
        assert "AUDIT_SIGNING_KEY" in str(error)
        assert "AYEKFALV" not in str(error)
    with caplog.at_level(logging.DEBUG):
        settings.AUDIT_SIGNING_KEY = mangled
        assert checkpoint_tick() == "failed"
    assert "AYEKFALV" not in caplog.text


def test_the_signing_key_never_reaches_logs_or_the_database(audit_key, caplog) -> None:
    record(3)
    with caplog.at_level(logging.DEBUG):
        run("audit_checkpoint")
    secret = audit_key.text.split("+")[-1]
    assert secret not in caplog.text
    assert not AuditCheckpoint.objects.filter(note__contains=secret).exists()


# --- audit_checkpoint ------------------------------------------------------------------------


def test_a_checkpoint_is_signed_stored_and_printed(audit_key) -> None:
    events = record(5)
    out, err = run_both("audit_checkpoint")
    stored = AuditCheckpoint.objects.get()
    assert out == stored.note
    assert err == "checkpoint at tree size 5 signed\n"
    checkpoint = open_checkpoint(out, audit_key.verifier)
    assert (checkpoint.origin, checkpoint.size) == ("multichannel.test/audit", 5)
    assert checkpoint.root == streamed_root(5)
    assert stored.root_hash == checkpoint.root.hex()
    assert len(events) == 5


def test_with_no_new_event_the_latest_checkpoint_is_printed_again(audit_key) -> None:
    record(2)
    first = run("audit_checkpoint")
    out, err = run_both("audit_checkpoint")
    assert out == first
    assert err == "checkpoint at tree size 2 unchanged (no new events)\n"
    assert AuditCheckpoint.objects.count() == 1


def test_the_origin_can_be_set_apart_from_the_key_name(settings, audit_key) -> None:
    settings.AUDIT_LOG_ORIGIN = "ledger.example/prod"
    record(1)
    assert (
        open_checkpoint(run("audit_checkpoint"), audit_key.verifier).origin == "ledger.example/prod"
    )


def test_an_empty_ledger_gets_the_empty_root(audit_key) -> None:
    checkpoint = open_checkpoint(run("audit_checkpoint"), audit_key.verifier)
    assert (checkpoint.size, checkpoint.root) == (0, merkle.EMPTY_ROOT)


def test_the_tree_grows_by_the_new_events_only(audit_key) -> None:
    record(300)
    run("audit_checkpoint")
    record(20)
    with CaptureQueriesContext(connection) as queries:
        checkpoint, created = checkpoint_create()
    assert created
    assert checkpoint.size == 320
    reads = [q["sql"] for q in queries if 'FROM "audit_auditevent"' in q["sql"]]
    # The new events (one chunked read from sequence 300 on) and the hash of event 300.
    assert all("300" in sql for sql in reads)
    assert bytes.fromhex(checkpoint.root_hash) == streamed_root(320)
    assert list(AuditTreeTile.objects.order_by("level", "number", "width").values_list(
        "level", "number", "width"
    )) == [(0, 0, 256), (0, 1, 44), (0, 1, 64), (1, 0, 1)]  # fmt: skip


def test_every_node_of_the_stored_tree_is_the_reference_one(audit_key) -> None:
    record(600)
    run("audit_checkpoint")
    leaves = [record_leaf(event) for event in database_records()]
    reader = TileReader()
    for level, index in [(0, 0), (0, 599), (3, 70), (8, 0), (8, 1), (9, 0)]:
        assert reader.node(level, index) == merkle.subtree_root(
            leaves[index << level : (index + 1) << level]
        )
    assert reader.root(600) == merkle.fold_right(reader.edge(600)) == streamed_root(600)
    assert reader.root(317) == streamed_root(317)


def test_a_checkpoint_is_refused_for_a_log_that_lost_events(audit_key, without_triggers) -> None:
    record(5)
    run("audit_checkpoint")
    raw_sql("DELETE FROM audit_auditevent WHERE sequence > 3")
    raw_sql("UPDATE audit_auditchainhead SET sequence = 3")
    error = failure("audit_checkpoint")
    assert (str(error), error.returncode) == (
        "refusing to sign: the ledger holds 3 events, fewer than the 5 of the latest checkpoint",
        1,
    )


def test_a_checkpoint_is_refused_for_a_broken_chain(audit_key, without_triggers) -> None:
    record(4)
    raw_sql("DELETE FROM audit_auditevent WHERE sequence = 2")
    assert (
        str(failure("audit_checkpoint")) == "refusing to sign: sequence 2 is missing (found 3 next)"
    )
    raw_sql("UPDATE audit_auditevent SET previous_hash = %s WHERE sequence = 3", ["0" * 64])
    raw_sql("UPDATE audit_auditevent SET sequence = 2 WHERE sequence = 3")
    assert (
        str(failure("audit_checkpoint"))
        == "refusing to sign: the hash chain is broken at sequence 2"
    )


def test_a_rewritten_past_is_never_signed_over(audit_key, without_triggers) -> None:
    from tests.support.audit_ledger import rewrite_history

    record(4)
    run("audit_checkpoint")
    rewrite_history(lambda events: events[1:])  # drop the first, renumber, rechain
    record(2)
    assert str(failure("audit_checkpoint")) == (
        "refusing to sign: the events up to the latest checkpoint were changed: event 4's "
        "hash is not the one it had when that checkpoint was signed (run verify_audit "
        "--checkpoint)"
    )
    raw_sql("DELETE FROM audit_audittreetile")  # and without the stored tree to go by
    assert str(failure("audit_checkpoint")) == (
        "refusing to sign: the first 4 events are no longer those of the latest "
        "checkpoint: the log was changed (run verify_audit --checkpoint)"
    )


def test_missing_tiles_are_rebuilt_from_the_events(audit_key, without_triggers) -> None:
    record(10)
    run("audit_checkpoint")
    raw_sql("DELETE FROM audit_audittreetile")
    record(5)
    checkpoint, created = checkpoint_create()
    assert created
    assert bytes.fromhex(checkpoint.root_hash) == streamed_root(15)


def test_checkpoints_and_tiles_cannot_be_changed_in_the_database(audit_key) -> None:
    record(3)
    run("audit_checkpoint")
    for sql in (
        "UPDATE audit_auditcheckpoint SET size = 2",
        "DELETE FROM audit_auditcheckpoint",
        "UPDATE audit_audittreetile SET width = 1",
        "DELETE FROM audit_audittreetile",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            raw_sql(sql)
    assert AuditCheckpoint.objects.count() == 1


# --- the periodic task ---------------------------------------------------------------------


def test_the_periodic_task_is_registered_every_minute() -> None:
    from huey.contrib.djhuey import HUEY

    from audit.tasks import audit_checkpoint_periodic

    due = HUEY.read_periodic(timezone.now())
    assert any(isinstance(task, audit_checkpoint_periodic.task_class) for task in due)


def test_the_tick_signs_when_new_events_exist_and_the_interval_has_passed(
    settings, audit_key
) -> None:
    settings.AUDIT_CHECKPOINT_MINUTES = 60
    now = timezone.now()
    assert checkpoint_tick(now) == "not due"  # nothing recorded yet
    record(2)
    assert checkpoint_tick(now) == "signed 2"
    record(1)
    assert checkpoint_tick(now + timedelta(minutes=59)) == "not due"
    assert checkpoint_tick(now + timedelta(minutes=61)) == "signed 3"
    assert checkpoint_tick(now + timedelta(minutes=200)) == "not due"  # no new events
    assert list(AuditCheckpoint.objects.values_list("size", flat=True)) == [3, 2]


def test_the_task_itself_runs_the_tick(audit_key) -> None:
    from audit.tasks import audit_checkpoint_periodic

    record(1)
    assert audit_checkpoint_periodic.call_local() == "signed 1"


# --- where auditors read it ------------------------------------------------------------------


@pytest.fixture
def auditor() -> Client:
    user = User.objects.create_user("alice", password="a-long-test-password-1", is_staff=True)
    user.groups.add(Group.objects.get(name="Auditors"))
    browser = Client()
    browser.force_login(user)
    return browser


def test_the_latest_checkpoint_is_served_to_auditors_as_text(auditor: Client, audit_key) -> None:
    assert auditor.get("/audit/checkpoint").status_code == 404
    record(2)
    run("audit_checkpoint")
    record(1)
    latest = run("audit_checkpoint")
    answer = auditor.get("/audit/checkpoint")
    assert answer.status_code == 200
    assert answer["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.content.decode() == latest


def test_the_checkpoint_url_needs_an_auditor_login(client: Client, audit_key) -> None:
    record(1)
    run("audit_checkpoint")
    answer = client.get("/audit/checkpoint")
    assert answer.status_code == 302
    assert "/admin/login/" in answer["Location"]
    staff = User.objects.create_user("bob", password="a-long-test-password-1", is_staff=True)
    client.force_login(staff)
    assert client.get("/audit/checkpoint").status_code == 403


def test_the_admin_shows_the_latest_checkpoint_and_the_public_key(
    auditor: Client, audit_key
) -> None:
    record(2)
    note = run("audit_checkpoint")
    page = auditor.get("/admin/audit/auditevent/checkpoints/")
    assert page.status_code == 200
    html = page.content.decode()
    assert audit_key.verifier.text in html
    assert note.splitlines()[2] in html  # the root line
    assert "Signed checkpoints" in auditor.get("/admin/audit/auditevent/").content.decode()


def test_the_admin_says_when_no_key_is_configured(auditor: Client, settings) -> None:
    settings.AUDIT_SIGNING_KEY = ""
    html = auditor.get("/admin/audit/auditevent/checkpoints/").content.decode()
    assert "AUDIT_SIGNING_KEY is not set" in html
    assert "No checkpoint yet" in html
