"""The evidence bundle: what it holds, and its standalone verify.py, run in a fresh
virtual environment with nothing but `cryptography`, passing a good bundle and saying
exactly what is wrong with a tampered one."""

import ast
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from audit.models import AuditEvent
from audit.notes import generate_key, sign_note
from tests.support.audit_ledger import (
    checkpoint,
    erase,
    export,
    failure,
    raw_sql,
    record,
    run,
    run_both,
)
from tests.support.ci import need

pytestmark = pytest.mark.django_db

STANDARD_LIBRARY = set(sys.stdlib_module_names)


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A new virtual environment with only the pinned `cryptography` (and what it needs)."""
    venv = tmp_path_factory.mktemp("verify-env")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"cryptography=={version('cryptography')}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    need(
        installed.returncode == 0, f"pip could not install cryptography: {installed.stderr[-300:]}"
    )
    return python


def unpack(bundle: Path, into: Path) -> Path:
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(into)
    return into


def verify(python: str, directory: Path, *args: str) -> tuple[int, str]:
    # From the bundle's own directory, with no path into this project.
    done = subprocess.run(
        [python, "verify.py", *args], cwd=directory, capture_output=True, text=True,
        env={"PATH": os.environ["PATH"]}, timeout=120, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def make_bundle(tmp_path: Path, name: str = "evidence", *filters: str) -> Path:
    path = tmp_path / f"{name}.zip"
    run("audit_bundle", "--output", str(path), *filters)
    return unpack(path, tmp_path / name)


def fix_manifest(directory: Path) -> None:
    """What a careful forger does after editing a file: make the MANIFEST match again."""
    lines = []
    for line in (directory / "MANIFEST").read_text().splitlines():
        name = line.split("  ", 1)[1]
        lines.append(f"{hashlib.sha256((directory / name).read_bytes()).hexdigest()}  {name}")
    (directory / "MANIFEST").write_text("\n".join(lines) + "\n")


@pytest.fixture
def signed_twice(audit_key, tmp_path: Path) -> Path:
    """Ten events of two people, a checkpoint after four (kept by the auditor) and one
    after ten."""
    for i in range(10):
        record(1, end_user_id=f"user_{i % 2 + 1}")
        if i == 3:
            kept = checkpoint(tmp_path / "kept.txt")
    run("audit_checkpoint")
    return kept


# --- what is in it ---------------------------------------------------------------------------


def test_a_complete_bundle_holds_the_export_checkpoints_key_verifier_and_manifest(
    signed_twice, audit_key, tmp_path: Path
) -> None:
    bundle = tmp_path / "evidence.zip"
    out, err = run_both("audit_bundle", "--output", str(bundle))
    assert (out, err) == ("", f"wrote {bundle}: all 10 events, 2 checkpoints up to tree size 10\n")
    directory = unpack(bundle, tmp_path / "evidence")
    names = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    assert names == [
        "MANIFEST",
        "README.md",
        "checkpoints/checkpoint-000000000004.txt",
        "checkpoints/checkpoint-000000000010.txt",
        "consistency.json",
        "export.jsonl",
        "public-key.txt",
        "verify.py",
    ]
    assert (directory / "export.jsonl").read_bytes() == export(tmp_path / "e.jsonl").read_bytes()
    assert (directory / "public-key.txt").read_text() == audit_key.verifier.text + "\n"
    assert (directory / "checkpoints/checkpoint-000000000004.txt").read_text() == (
        signed_twice.read_text()
    )
    for line in (directory / "MANIFEST").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == digest
    readme = (directory / "README.md").read_text()
    assert f"pip install cryptography=={version('cryptography')}" in readme
    assert "8 bytes big-endian" in readme


def test_a_filtered_bundle_carries_inclusion_proofs(signed_twice, tmp_path: Path) -> None:
    directory = make_bundle(tmp_path, "mine", "--end-user", "user_2")
    proofs = json.loads((directory / "proofs.json").read_text())
    assert [event["sequence"] for event in proofs["events"]] == [2, 4, 6, 8, 10]
    assert "user_1" not in (directory / "export.jsonl").read_text()


def test_events_after_the_latest_checkpoint_are_left_out(signed_twice, tmp_path: Path) -> None:
    record(3)
    directory = make_bundle(tmp_path)
    assert len((directory / "export.jsonl").read_text().splitlines()) == 10


def test_no_bundle_without_a_checkpoint_or_a_key(settings, tmp_path: Path, audit_key) -> None:
    record(1)
    error = failure("audit_bundle", "--output", str(tmp_path / "x.zip"))
    assert (str(error), error.returncode) == (
        "there is no signed checkpoint yet: run manage.py audit_checkpoint",
        2,
    )
    settings.AUDIT_SIGNING_KEY = ""
    assert str(failure("audit_bundle", "--output", str(tmp_path / "x.zip"))) == (
        "AUDIT_SIGNING_KEY is not set: there is no key to prove anything with"
    )
    assert not (tmp_path / "x.zip").exists()


def test_verify_py_imports_nothing_but_the_standard_library_and_cryptography() -> None:
    from audit import bundle_verify

    tree = ast.parse(Path(bundle_verify.__file__).read_text())
    modules = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert modules - STANDARD_LIBRARY - {"__future__"} == {"cryptography"}


# --- verify.py in a bare environment ---------------------------------------------------------


def test_verify_py_passes_a_good_bundle_alone(bare_python: str, signed_twice, tmp_path) -> None:
    directory = make_bundle(tmp_path)
    code, output = verify(bare_python, directory, "--pubkey", str(directory / "public-key.txt"))
    assert code == 0, output
    assert output.splitlines()[-1] == "OK"
    assert "ok   export.jsonl: all 10 events, chain intact" in output
    assert "ok   the latest checkpoint (tree size 10) extends every earlier one" in output
    listed = subprocess.run([bare_python, "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert {line.split("==")[0].lower() for line in listed.split()} <= {
        "cryptography", "cffi", "pycparser", "pip", "setuptools",
    }  # fmt: skip


def test_verify_py_proves_the_log_extends_a_checkpoint_the_auditor_kept(
    bare_python: str, signed_twice: Path, tmp_path: Path
) -> None:
    directory = make_bundle(tmp_path)
    code, output = verify(bare_python, directory, "--checkpoint", str(signed_twice))
    assert code == 0, output
    assert "ok   your checkpoint at tree size 4 is extended by this log" in output


def test_verify_py_passes_bundles_taken_after_an_erasure(
    bare_python: str, signed_twice, tmp_path: Path
) -> None:
    erase("user_2")
    run("audit_checkpoint")
    note = (
        "note 5 events verified digest-only (content erased, each covered by an erasure or "
        "retention event): sequence "
    )
    for name, filters, erased in (
        ("all", (), "2, 4, 6, 8, 10"),
        ("mine", ("--end-user", "user_2"), "2, 4, 6, 8, 10"),
        # Without the erasure event itself: each line names it (erased_by).
        ("created", ("--end-user", "user_2", "--action", "responses.create"), "2, 4, 6, 8, 10"),
    ):
        directory = make_bundle(tmp_path, name, *filters)
        code, output = verify(bare_python, directory)
        assert code == 0, output
        assert note + erased in output


def test_verify_py_catches_content_removed_without_an_erasure(
    bare_python: str, signed_twice, without_triggers, tmp_path: Path
) -> None:
    raw_sql(
        "UPDATE audit_auditevent SET context = '{}', full_response_sha256 = NULL WHERE sequence = 4"
    )
    directory = make_bundle(tmp_path)
    code, output = verify(bare_python, directory)
    assert (code, output.splitlines()[-1]) == (
        1,
        "FAIL: at sequence 4: changed (its content is gone, and no erasure or retention "
        "event says why)",
    )


def test_verify_py_names_a_changed_byte_even_with_the_manifest_fixed(
    bare_python: str, signed_twice, tmp_path: Path
) -> None:
    directory = make_bundle(tmp_path)
    export_file = directory / "export.jsonl"
    export_file.write_text(export_file.read_text().replace("answer 2", "answer 7"))
    code, output = verify(bare_python, directory)
    assert (code, output.splitlines()[-1]) == (
        1,
        "FAIL: MANIFEST: export.jsonl was changed (its SHA-256 differs)",
    )
    fix_manifest(directory)
    code, output = verify(bare_python, directory)
    assert (code, output.splitlines()[-1]) == (
        1,
        "FAIL: at sequence 3: changed (content does not match its digest)",
    )


def test_verify_py_catches_a_log_rewritten_before_the_bundle_was_made(
    bare_python: str, signed_twice, tmp_path: Path, without_triggers
) -> None:
    from dataclasses import replace

    from tests.support.audit_ledger import rewrite_history

    rewrite_history(lambda events: [replace(events[0], channel="webapp"), *events[1:]])
    directory = make_bundle(tmp_path)
    code, output = verify(bare_python, directory)
    assert (code, output.splitlines()[-1]) == (
        1,
        "FAIL: root: the first 4 events of export.jsonl do not have the signed root of the "
        "checkpoint at tree size 4",
    )


def test_verify_py_catches_a_truncated_log_against_the_auditors_checkpoint(
    bare_python: str, signed_twice: Path, tmp_path: Path, without_triggers, audit_key
) -> None:
    # The operator cuts the log back to three events, and even signs a fresh checkpoint
    # of that (they hold the key); the auditor kept the one at four.
    raw_sql("DELETE FROM audit_auditcheckpoint")
    raw_sql("DELETE FROM audit_audittreetile")
    raw_sql("DELETE FROM audit_auditevent WHERE sequence > 3")
    head = AuditEvent.objects.get(sequence=3).hash
    raw_sql("UPDATE audit_auditchainhead SET sequence = 3, hash = %s", [head])
    run("audit_checkpoint")
    directory = make_bundle(tmp_path)
    assert verify(bare_python, directory)[0] == 0  # self-consistent on its own
    code, output = verify(bare_python, directory, "--checkpoint", str(signed_twice))
    assert (code, output.splitlines()[-1]) == (
        1,
        "FAIL: your checkpoint (tree size 4) is newer than the bundle's latest (3): the log "
        "was truncated, or the bundle is older than it",
    )


def test_verify_py_catches_a_forged_proof_and_another_key(
    bare_python: str, signed_twice, tmp_path: Path, audit_key
) -> None:
    directory = make_bundle(tmp_path, "mine", "--end-user", "user_2")
    proofs = json.loads((directory / "proofs.json").read_text())
    proofs["events"][1]["inclusion_proof"][0] = proofs["events"][0]["inclusion_proof"][0]
    (directory / "proofs.json").write_text(json.dumps(proofs))
    fix_manifest(directory)
    code, output = verify(bare_python, directory)
    assert (code, output.splitlines()[-1]) == (
        1,
        "FAIL: at sequence 4: not in the log at tree size 10 (the inclusion proof does not "
        "lead to the signed root)",
    )
    other = make_bundle(tmp_path, "other")
    text = (other / "checkpoints/checkpoint-000000000010.txt").read_text()
    impostor = generate_key(audit_key.name)
    checkpoint_text = text.split("\n\n")[0] + "\n"
    (other / "checkpoints/checkpoint-000000000010.txt").write_text(
        sign_note(checkpoint_text, impostor)
    )
    fix_manifest(other)
    code, output = verify(bare_python, other, "--pubkey", audit_key.verifier.text)
    assert (code, output.splitlines()[-1]) == (
        1,
        f"FAIL: signature: checkpoint-000000000010.txt is not signed by the key "
        f"{audit_key.verifier.text}",
    )


# --- the admin download ----------------------------------------------------------------------


@pytest.fixture
def auditor() -> Client:
    user = get_user_model().objects.create_user(
        "alice", password="a-long-test-password-1", is_staff=True
    )
    user.groups.add(Group.objects.get(name="Auditors"))
    browser = Client()
    browser.force_login(user)
    return browser


def test_the_admin_downloads_the_bundle_of_the_filtered_list(
    auditor: Client, signed_twice, tmp_path: Path
) -> None:
    answer = auditor.get("/admin/audit/auditevent/bundle/?end_user_id=user_1")
    assert answer.status_code == 200
    assert answer["Content-Type"] == "application/zip"
    assert answer["Content-Disposition"].startswith('attachment; filename="audit-evidence-')
    (tmp_path / "admin.zip").write_bytes(answer.getvalue())
    with zipfile.ZipFile(tmp_path / "admin.zip") as archive:
        lines = archive.read("export.jsonl").decode().splitlines()
        assert "proofs.json" in archive.namelist()
    assert [json.loads(line)["sequence"] for line in lines] == [1, 3, 5, 7, 9]


def test_the_admin_says_why_there_is_no_bundle(auditor: Client, settings) -> None:
    settings.AUDIT_SIGNING_KEY = ""
    answer = auditor.get("/admin/audit/auditevent/bundle/")
    assert answer.status_code == 409
    assert answer.content.decode() == (
        "No evidence bundle: AUDIT_SIGNING_KEY is not set: there is no key to prove anything with\n"
    )
