"""An auditor holding one signed checkpoint catches what the database's operator can do
to the ledger, even with the triggers dropped and the whole hash chain recomputed: in
the database (`verify_audit --checkpoint`) and in an export (`--file`)."""

from dataclasses import replace
from pathlib import Path

import pytest

from audit.models import AuditBody, AuditEvent
from audit.notes import generate_key, sign_note
from tests.support.audit_ledger import (
    checkpoint,
    erase,
    export,
    failure,
    raw_sql,
    record,
    rewrite_history,
    run,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed(audit_key, public_key_file: str, tmp_path: Path) -> tuple[Path, str]:
    """Five events and the checkpoint an auditor kept of them."""
    record(5)
    return checkpoint(tmp_path / "checkpoint.txt"), public_key_file


def check(signed: tuple[Path, str], *args: str) -> str:
    path, key = signed
    return run("verify_audit", "--checkpoint", str(path), "--pubkey", key, *args)


def caught(signed: tuple[Path, str], *args: str) -> tuple[str, int]:
    path, key = signed
    error = failure("verify_audit", "--checkpoint", str(path), "--pubkey", key, *args)
    return str(error), error.returncode


def root_of(signed: tuple[Path, str]) -> str:
    return signed[0].read_text().splitlines()[2]


def both_ways(signed: tuple[Path, str], tmp_path: Path) -> list[tuple[str, int]]:
    """The verdict on the database, and on an export of it."""
    return [caught(signed), caught(signed, "--file", str(export(tmp_path / "export.jsonl")))]


# --- what passes ---------------------------------------------------------------------------


def test_an_untouched_log_passes_in_the_database_and_in_an_export(signed, tmp_path: Path) -> None:
    root = root_of(signed)
    last = AuditEvent.objects.get(sequence=5).hash
    expected = (
        f"OK: the log's first 5 events have the signed checkpoint's root {root} "
        f"(multichannel.test/audit)\n"
        f"OK: 5 events, chain intact; last sequence 5, hash {last}\n"
    )
    assert check(signed) == expected
    assert check(signed, "--file", str(export(tmp_path / "export.jsonl"))) == expected


@pytest.mark.slow
def test_an_untouched_log_passes_after_thousands_of_new_events(signed, tmp_path: Path) -> None:
    record(2995)
    later = checkpoint(tmp_path / "later.txt")
    path, key = signed
    assert check(signed).startswith("OK: the log's first 5 events have")
    assert check((later, key)).startswith("OK: the log's first 3000 events have")
    exported = str(export(tmp_path / "export.jsonl"))
    assert check(signed, "--file", exported).splitlines()[1].startswith("OK: 3000 events")
    assert check((later, key), "--file", exported).startswith("OK: the log's first 3000 events")
    consistency = run("verify_audit", "--consistency", str(path), str(later), "--pubkey", key)
    assert consistency.startswith("OK: the log at tree size 3000")


def test_an_erasure_leaves_digest_only_events_that_still_verify(signed, tmp_path: Path) -> None:
    record(2, end_user_id="user_2")
    assert erase("user_1").sequence == 8
    # Every row, digest and hash stays; only the content went.
    assert AuditEvent.objects.count() == 8
    erased = AuditEvent.objects.filter(sequence__lte=5)
    assert [(event.context, event.body_id) for event in erased] == [({}, None)] * 5
    path, key = signed
    note = "; 5 verified digest-only (content erased): sequence 1, 2, 3, 4, 5\n"
    assert check(signed).endswith(note)
    exported = export(tmp_path / "export.jsonl")
    lines = exported.read_text().splitlines()
    assert '"full_response":null,' in lines[2]
    assert '"context":{}' in lines[2]
    assert lines[2].endswith(',"erased_by":8}')
    assert '"output_text":"answer 5"' in lines[5]  # someone else's: intact
    assert "erased_by" not in lines[5]
    assert check(signed, "--file", str(exported)).endswith(note)
    record(300)
    later = checkpoint(tmp_path / "later.txt")
    assert check((later, key)).endswith(note)
    assert run("verify_audit", "--consistency", str(path), str(later), "--pubkey", key).startswith(
        "OK"
    )


def test_an_export_taken_before_an_erasure_still_verifies_on_its_own(
    signed, tmp_path: Path
) -> None:
    before = export(tmp_path / "before.jsonl")
    erase("user_1")
    assert check(signed, "--file", str(before)).splitlines()[1].startswith("OK: 5 events")
    after = export(tmp_path / "after.jsonl")
    assert before.read_text().splitlines()[0] != after.read_text().splitlines()[0]


# --- what is caught --------------------------------------------------------------------------


def test_tail_truncation_with_the_chain_head_moved_back_is_caught(
    signed, without_triggers, tmp_path: Path
) -> None:
    raw_sql("DELETE FROM audit_auditevent WHERE sequence > 3")
    head = AuditEvent.objects.get(sequence=3).hash
    raw_sql("UPDATE audit_auditchainhead SET sequence = 3, hash = %s", [head])
    # The chain alone cannot tell: it ends where the head says.
    assert run("verify_audit").startswith("OK: 3 events, chain intact")
    expected = (
        "FAIL: size: the log holds 3 events, the checkpoint covers 5 "
        "(events from sequence 4 on are missing)"
    )
    assert both_ways(signed, tmp_path) == [(expected, 1), (expected, 1)]


def test_a_deletion_in_the_middle_is_caught(signed, without_triggers, tmp_path: Path) -> None:
    raw_sql("DELETE FROM audit_auditevent WHERE sequence = 3")
    expected = "FAIL at sequence 3: missing or out of order (found sequence 4 next)"
    assert both_ways(signed, tmp_path) == [(expected, 1), (expected, 1)]


def test_a_deletion_with_the_chain_recomputed_and_refilled_is_caught(
    signed, without_triggers, tmp_path: Path
) -> None:
    rewrite_history(lambda events: events[:2] + events[3:])
    record(1)  # back to five events, the chain recomputed and intact
    assert run("verify_audit").startswith("OK: 5 events, chain intact")
    expected = (
        f"FAIL: root: the log's first 5 events do not have the checkpoint's root "
        f"{root_of(signed)}; sequence 3 is the first event that differs from what was signed"
    )
    assert both_ways(signed, tmp_path) == [(expected, 1), (expected, 1)]


def test_reordering_is_caught(signed, without_triggers, tmp_path: Path) -> None:
    raw_sql("UPDATE audit_auditevent SET sequence = -2 WHERE sequence = 2")
    raw_sql("UPDATE audit_auditevent SET sequence = 2 WHERE sequence = 3")
    raw_sql("UPDATE audit_auditevent SET sequence = 3 WHERE sequence = -2")
    assert caught(signed) == ("FAIL at sequence 2: reordered (it was chained after sequence 3)", 1)
    assert caught(signed, "--file", str(export(tmp_path / "export.jsonl"))) == (
        "FAIL at sequence 2: chain broken (previous hash does not match)",
        1,
    )


def test_reordering_with_the_chain_recomputed_is_caught(
    signed, without_triggers, tmp_path: Path
) -> None:
    rewrite_history(lambda events: [events[0], events[2], events[1], *events[3:]])
    assert run("verify_audit").startswith("OK: 5 events, chain intact")
    expected = (
        f"FAIL: root: the log's first 5 events do not have the checkpoint's root "
        f"{root_of(signed)}; sequence 2 is the first event that differs from what was signed"
    )
    assert both_ways(signed, tmp_path) == [(expected, 1), (expected, 1)]


def test_one_byte_of_one_full_response_is_caught(signed, without_triggers, tmp_path: Path) -> None:
    exported = export(tmp_path / "export.jsonl")
    data = bytearray(exported.read_bytes())
    at = data.index(b"answer 2") + len("answer ")
    data[at] = ord("7")
    (tmp_path / "edited.jsonl").write_bytes(bytes(data))
    expected = "FAIL at sequence 3: changed (content does not match its digest)"
    assert caught(signed, "--file", str(tmp_path / "edited.jsonl")) == (expected, 1)
    body = AuditEvent.objects.get(sequence=3).body_id
    text = AuditBody.objects.get(digest=body).text
    raw_sql("UPDATE audit_auditbody SET text = %s WHERE digest = %s",
            [text.replace("answer 2", "answer 7"), body])  # fmt: skip
    assert caught(signed) == (expected, 1)


def test_a_whole_chain_rewrite_with_every_hash_recomputed_is_caught(
    signed, without_triggers, tmp_path: Path
) -> None:
    rewrite_history(
        lambda events: [events[0], replace(events[1], end_user_id="someone_else"), *events[2:]]
    )
    assert run("verify_audit").startswith("OK: 5 events, chain intact")
    expected = (
        f"FAIL: root: the log's first 5 events do not have the checkpoint's root "
        f"{root_of(signed)}; sequence 2 is the first event that differs from what was signed"
    )
    assert both_ways(signed, tmp_path) == [(expected, 1), (expected, 1)]
    # Without a stored tree that still has the signed root, the failure cannot say where.
    raw_sql("DELETE FROM audit_audittreetile")
    assert caught(signed) == (
        f"FAIL: root: the log's first 5 events do not have the checkpoint's root {root_of(signed)}",
        1,
    )


def test_a_checkpoint_signed_by_another_key_is_refused(signed, audit_key) -> None:
    path = signed[0]
    impostor = generate_key(audit_key.name)  # same name, different key
    text = path.read_text().split("\n\n")[0] + "\n"
    path.write_text(sign_note(text, impostor))
    expected_key = f"{audit_key.name}+{audit_key.id.hex()}"
    assert caught(signed) == (f"FAIL: signature of {path}: not signed by the key {expected_key}", 1)


@pytest.mark.parametrize("line", [1, 2], ids=["size", "root"])
def test_a_checkpoint_whose_size_or_root_was_edited_is_refused(signed, line: int) -> None:
    path, _ = signed
    lines = path.read_text().split("\n")
    lines[line] = "4" if line == 1 else "A" * 43 + "="
    path.write_text("\n".join(lines))
    assert caught(signed) == (
        f"FAIL: signature of {path}: the signature by multichannel.test/audit is not valid "
        "for this text",
        1,
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("hello\n", "not a checkpoint (origin, size and root hash lines expected)"),
        (
            "origin\n5\n\n— origin AAAA\n",
            "not a checkpoint (origin, size and root hash lines expected)",
        ),
        (
            "origin\n5\nnot-base64\n\n— origin AAAAAA==\n",
            "the checkpoint's root hash is not valid base64",
        ),
    ],
)
def test_a_malformed_checkpoint_exits_2_with_a_reason(
    signed, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content)
    assert caught((path, signed[1])) == (f"{path}: {message}", 2)


def test_a_bad_public_key_exits_2_with_a_reason(signed) -> None:
    path, _ = signed
    assert caught((path, "not-a-key")) == (
        "--pubkey: the public key is not of the form name+keyid+base64key",
        2,
    )


def test_a_checkpoint_needs_the_public_key_and_a_complete_export(signed, tmp_path: Path) -> None:
    path, key = signed
    assert str(failure("verify_audit", "--checkpoint", str(path))) == (
        "--checkpoint needs the log's public key (--pubkey)"
    )
    partial = export(tmp_path / "p.jsonl", "--response", "resp_1")
    args = ["--partial", "--file", str(partial), "--checkpoint", str(path), "--pubkey", key]
    assert str(failure("verify_audit", *args)) == (
        "--partial only applies to --file (without --checkpoint)"
    )


def test_a_body_deleted_without_an_erasure_is_caught(signed, tmp_path: Path) -> None:
    # Bodies may be deleted (no trigger guards them), but nothing in the ledger says why.
    AuditBody.objects.filter(digest=AuditEvent.objects.get(sequence=3).body_id).delete()
    assert (
        both_ways(signed, tmp_path)
        == [("FAIL at sequence 3: changed (content does not match its digest)", 1)] * 2
    )


def test_content_blanked_without_an_erasure_event_is_caught(
    signed, without_triggers, tmp_path: Path
) -> None:
    raw_sql(
        "UPDATE audit_auditevent SET context = '{}', full_response_sha256 = NULL WHERE sequence = 3"
    )
    problem = "changed (its content is gone, and no erasure or retention event says why)"
    assert both_ways(signed, tmp_path) == [(f"FAIL at sequence 3: {problem}", 1)] * 2


def test_another_persons_erasure_does_not_cover_an_event(
    signed, without_triggers, tmp_path: Path
) -> None:
    erase("user_2")
    raw_sql(
        "UPDATE audit_auditevent SET context = '{}', full_response_sha256 = NULL WHERE sequence = 3"
    )
    problem = "changed (its content is gone, and no erasure or retention event says why)"
    assert both_ways(signed, tmp_path) == [(f"FAIL at sequence 3: {problem}", 1)] * 2
