"""Proofs an auditor checks offline: one person's events included in a signed log
(`audit_proof`, `verify_audit --proof`), and a later checkpoint extending an earlier one
(`verify_audit --consistency`, from the database or from a bundle)."""

import json
from pathlib import Path

import pytest

from audit.integrity import chain_hash, content_digest
from audit.notes import Checkpoint, generate_key, sign_note
from audit.proofs import PROOF_FORMAT
from tests.support.audit_ledger import checkpoint, export, failure, record, run, run_both

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger(audit_key, public_key_file: str, tmp_path: Path) -> str:
    """Six events of two people, three each, alternating; a checkpoint of them."""
    for _ in range(3):
        record(1, end_user_id="user_1")
        record(1, end_user_id="user_2")
    checkpoint(tmp_path / "checkpoint.txt")
    return public_key_file


def prove(tmp_path: Path, *args: str) -> Path:
    path = tmp_path / "proof.json"
    run("audit_proof", *args, "--output", str(path))
    return path


def verify_proof(path: Path, key: str) -> str:
    return run("verify_audit", "--proof", str(path), "--pubkey", key)


def refused(path: Path, key: str) -> tuple[str, int]:
    error = failure("verify_audit", "--proof", str(path), "--pubkey", key)
    return str(error), error.returncode


def edit(path: Path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


# --- inclusion -------------------------------------------------------------------------------


def test_a_proof_holds_one_persons_events_and_nobody_elses(ledger, tmp_path: Path) -> None:
    out, err = run_both("audit_proof", "--end-user", "user_2")
    document = json.loads(out)
    assert document["format"] == PROOF_FORMAT
    assert document["checkpoint"] == (tmp_path / "checkpoint.txt").read_text()
    assert [event["sequence"] for event in document["events"]] == [2, 4, 6]
    exported = export(tmp_path / "all.jsonl").read_text().splitlines()
    assert [event["export_line"] for event in document["events"]] == [
        exported[1],
        exported[3],
        exported[5],
    ]
    assert "user_1" not in out
    assert err == "3 events of end user user_2 proven against the checkpoint at tree size 6\n"


def test_a_proof_verifies_offline_without_the_database(
    ledger, tmp_path: Path, django_assert_num_queries
) -> None:
    path = prove(tmp_path, "--response", "resp_3")
    root = (tmp_path / "checkpoint.txt").read_text().splitlines()[2]
    with django_assert_num_queries(0):
        assert verify_proof(path, ledger) == (
            f"OK: 1 events included in the log at tree size 6 (signed checkpoint "
            f"multichannel.test/audit, root {root})\n"
        )


def test_events_after_the_checkpoint_are_left_out_and_said_so(ledger, tmp_path: Path) -> None:
    record(1, end_user_id="user_2")
    out, err = run_both("audit_proof", "--end-user", "user_2")
    assert len(json.loads(out)["events"]) == 3
    assert err.splitlines()[1] == (
        "1 later events of end user user_2 are not covered yet: they will be after the next "
        "checkpoint (manage.py audit_checkpoint)"
    )


def test_nothing_to_prove_is_an_error(ledger, settings) -> None:
    error = failure("audit_proof", "--response", "resp_unknown")
    assert (str(error), error.returncode) == (
        "no event of response resp_unknown in the log at the latest checkpoint (tree size 6)",
        1,
    )
    assert str(failure("audit_proof")) == ("one of the arguments --response --end-user is required")


def test_without_a_checkpoint_there_is_no_proof(db) -> None:
    record(1)
    error = failure("audit_proof", "--response", "resp_0")
    assert (str(error), error.returncode) == (
        "there is no signed checkpoint yet: run manage.py audit_checkpoint",
        2,
    )


def test_a_proof_for_an_event_that_is_not_in_the_log_fails(ledger, tmp_path: Path) -> None:
    path = prove(tmp_path, "--end-user", "user_2")

    def forge(document) -> None:
        # A made-up event at sequence 2, internally consistent (digest and hash),
        # carrying the real event's proof.
        line = json.loads(document["events"][0]["export_line"])
        line["end_user_id"] = "user_9"
        fields = {k: line[k] for k in ("timestamp", "channel", "action", "end_user_id",
                  "response_id", "conversation_id", "previous_response_id",
                  "api_key_fingerprint", "context")}  # fmt: skip
        full = json.dumps(line["full_response"], separators=(",", ":"))
        line["content_digest"] = content_digest(full_response=full, **fields)
        line["hash"] = chain_hash(sequence=2, previous_hash=line["previous_hash"],
                                  digest=line["content_digest"])  # fmt: skip
        document["events"][0]["export_line"] = json.dumps(line, separators=(",", ":"))

    edit(path, forge)
    assert refused(path, ledger) == (
        "FAIL at sequence 2: not in the log at the checkpoint (the inclusion proof does not "
        "lead to its signed root)",
        1,
    )


def test_a_proof_beyond_the_checkpoint_or_with_changed_content_fails(
    ledger, tmp_path: Path
) -> None:
    path = prove(tmp_path, "--response", "resp_3")
    original = path.read_text()
    edit(path, lambda d: d["events"][0].update(
        export_line=d["events"][0]["export_line"].replace("answer 3", "answer 4")))  # fmt: skip
    assert refused(path, ledger) == (
        "FAIL at sequence 4: changed (content does not match its digest)",
        1,
    )
    path.write_text(original)
    edit(path, lambda d: d["events"][0].update(sequence=5))
    assert refused(path, ledger) == (
        "FAIL at sequence 4: the proof is for sequence 5, the line is not",
        1,
    )


def test_a_proof_against_a_checkpoint_of_another_key_fails(
    ledger, tmp_path: Path, audit_key
) -> None:
    path = prove(tmp_path, "--response", "resp_3")
    impostor = generate_key(audit_key.name)
    text = (tmp_path / "checkpoint.txt").read_text().split("\n\n")[0] + "\n"
    edit(path, lambda d: d.update(checkpoint=sign_note(text, impostor)))
    message, code = refused(path, ledger)
    assert (message.split(": not signed")[0], code) == (f"FAIL: signature of {path}", 1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not a proof file: not valid JSON (Expecting property name enclosed in double "
              "quotes: line 1 column 2 (char 1))"),
        ('{"format": "x"}', f"not a proof file: its format is not {PROOF_FORMAT}"),
        (json.dumps({"format": PROOF_FORMAT, "checkpoint": "x", "events": [{}]}),
         "not a proof file: an event without its line or proof"),
    ],
)  # fmt: skip
def test_a_malformed_proof_exits_2_with_a_reason(
    ledger, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "proof.json"
    path.write_text(content)
    assert refused(path, ledger) == (f"{path}: {message}", 2)


# --- consistency -----------------------------------------------------------------------------


@pytest.fixture
def two(ledger, tmp_path: Path) -> tuple[Path, Path, str]:
    record(7)
    return tmp_path / "checkpoint.txt", checkpoint(tmp_path / "later.txt"), ledger


def roots(*paths: Path) -> list[str]:
    return [path.read_text().splitlines()[2] for path in paths]


def test_a_later_checkpoint_extends_an_earlier_one(two) -> None:
    old, new, key = two
    old_root, new_root = roots(old, new)
    assert run("verify_audit", "--consistency", str(old), str(new), "--pubkey", key) == (
        f"OK: the log at tree size 13 (root {new_root}) extends the log at tree size 6 "
        f"(root {old_root}); consistency proof from the database\n"
    )


def test_consistency_from_a_bundle(two, tmp_path: Path) -> None:
    old, new, key = two
    bundle = tmp_path / "evidence.zip"
    run("audit_bundle", "--output", str(bundle))
    args = ["--consistency", str(old), str(new), "--pubkey", key, "--bundle", str(bundle)]
    assert run("verify_audit", *args).endswith("consistency proof from the bundle\n")


def test_a_checkpoint_of_another_history_does_not_extend(two, audit_key, tmp_path: Path) -> None:
    old, new, key = two
    forked = tmp_path / "forked.txt"
    forked.write_text(sign_note(Checkpoint(audit_key.name, 13, bytes(32)).text, audit_key))
    error = failure("verify_audit", "--consistency", str(old), str(forked), "--pubkey", key)
    assert (str(error), error.returncode) == (
        "FAIL: consistency: the log at tree size 13 does not extend the log at tree size 6 "
        "(the proof does not match their signed roots)",
        1,
    )
    error = failure("verify_audit", "--consistency", str(new), str(old), "--pubkey", key)
    assert str(error) == "FAIL: size: NEW (6 events) is smaller than OLD (13): it cannot extend it"


def test_consistency_beyond_the_stored_tree_cannot_be_proven(two, audit_key, tmp_path) -> None:
    old, _, key = two
    ahead = tmp_path / "ahead.txt"
    ahead.write_text(sign_note(Checkpoint(audit_key.name, 99, bytes(32)).text, audit_key))
    error = failure("verify_audit", "--consistency", str(old), str(ahead), "--pubkey", key)
    assert error.returncode == 2
    assert str(error).startswith("the database cannot prove it: the stored tree has no tile")
