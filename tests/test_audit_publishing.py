"""Copies of every checkpoint outside the database: a directory, witness URLs, an RFC
3161 time-stamp from a local TSA; failures retried and shown in /healthz."""

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import responses
from django.test import Client
from django.utils import timezone

from audit.checkpoints import checkpoint_tick
from audit.models import AuditCheckpoint, AuditCheckpointTimestamp, AuditPublication
from audit.publishing import checkpoint_health
from audit.timestamps import timestamp_verify, tsa_roots
from tests.support.audit_ledger import record, run, run_both
from tests.support.ci import need
from tests.support.tsa import openssl_available, tsa_make, tsa_serve

pytestmark = pytest.mark.django_db

WITNESS = "https://witness.example/add-checkpoint"


def test_each_checkpoint_is_written_to_the_checkpoint_directory(
    settings, audit_key, tmp_path: Path
) -> None:
    settings.AUDIT_CHECKPOINT_DIR = str(tmp_path)
    record(2)
    out, err = run_both("audit_checkpoint")
    assert err == (
        f"checkpoint at tree size 2 signed\npublished checkpoint 2 to dir:{tmp_path}: ok\n"
    )
    assert (tmp_path / "checkpoint-000000000002.txt").read_text() == out


@responses.activate
def test_each_checkpoint_is_posted_to_every_witness(settings, audit_key) -> None:
    settings.AUDIT_WITNESS_URLS = [WITNESS, "https://second.example/w"]
    responses.post(WITNESS, status=200)
    responses.post("https://second.example/w", status=202)
    record(1)
    out, err = run_both("audit_checkpoint")
    assert [call.request.body for call in responses.calls] == [out.encode(), out.encode()]
    assert responses.calls[0].request.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert err.splitlines()[1:] == [
        f"published checkpoint 1 to witness:{WITNESS}: ok",
        "published checkpoint 1 to witness:https://second.example/w: ok",
    ]


@responses.activate
def test_a_failing_witness_is_retried_and_shown_in_healthz(
    settings, audit_key, client: Client
) -> None:
    settings.AUDIT_WITNESS_URLS = [WITNESS]
    failing = responses.post(WITNESS, status=503)
    record(1)
    _, err = run_both("audit_checkpoint")
    assert err.splitlines()[1] == (
        f"published checkpoint 1 to witness:{WITNESS}: FAILED, will retry: answered HTTP 503"
    )
    since = AuditPublication.objects.get().failing_since
    health = client.get("/healthz")
    assert health.status_code == 200  # a witness being down does not take the app down
    assert health.json()["checkpoints"] == (
        f"publish failing since {since.isoformat(timespec='seconds')}"
    )
    record(1)
    checkpoint_tick(timezone.now() + timedelta(hours=2))  # a second checkpoint waits its turn
    assert failing.call_count == 2
    assert [c.request.body.decode().split("\n")[1] for c in responses.calls] == ["1", "1"]
    responses.replace(responses.POST, WITNESS, status=200)
    checkpoint_tick()
    assert [c.request.body.decode().split("\n")[1] for c in responses.calls][2:] == ["1", "2"]
    assert not AuditPublication.objects.filter(published_at=None).exists()
    assert client.get("/healthz").json()["checkpoints"] == "ok"


@responses.activate
def test_witness_credentials_are_neither_stored_nor_reported(settings, audit_key) -> None:
    secret_url = "https://user:s3cret@witness.example/add?token=t0ken"
    settings.AUDIT_WITNESS_URLS = [secret_url]
    responses.post(secret_url, body=requests.ConnectionError(f"cannot reach {secret_url}"))
    record(1)
    _, err = run_both("audit_checkpoint")
    publication = AuditPublication.objects.get()
    assert publication.target == "witness:https://witness.example/add"
    assert publication.last_error == "unreachable (ConnectionError)"
    assert "s3cret" not in err
    assert "t0ken" not in err


def test_health_says_how_checkpoints_are_doing(settings, audit_key) -> None:
    settings.AUDIT_CHECKPOINT_MINUTES = 60
    assert checkpoint_health() == "ok"  # nothing recorded, nothing to sign
    record(1)
    assert checkpoint_health() == "no checkpoint yet"
    run("audit_checkpoint")
    record(1)
    assert checkpoint_health() == "ok"  # due at the next tick
    signed = AuditCheckpoint.objects.get().created_at
    later = signed + timedelta(minutes=121)
    assert checkpoint_health(later) == (
        f"overdue since {(signed + timedelta(minutes=60)).isoformat(timespec='seconds')}"
    )
    settings.AUDIT_SIGNING_KEY = ""
    assert checkpoint_health() == "not configured"


def test_a_publication_target_no_longer_configured_is_not_reported(
    settings, audit_key, tmp_path: Path
) -> None:
    settings.AUDIT_CHECKPOINT_DIR = str(tmp_path / "missing")
    record(1)
    run("audit_checkpoint")
    assert checkpoint_health().startswith("publish failing since")
    settings.AUDIT_CHECKPOINT_DIR = ""
    assert checkpoint_health() == "ok"


# --- RFC 3161 time-stamps --------------------------------------------------------------------


@pytest.fixture(scope="session")
def tsa_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(openssl_available(), "the openssl command (apt-get install openssl)")
    return tsa_make(tmp_path_factory.mktemp("tsa"))


@pytest.fixture
def local_tsa(tsa_directory: Path, settings):
    with tsa_serve(tsa_directory) as tsa:
        settings.AUDIT_TSA_URL = tsa.url
        settings.AUDIT_TSA_CA_FILE = str(tsa.ca_file)
        yield tsa


def test_each_checkpoint_gets_a_verified_time_stamp(
    local_tsa, audit_key, settings, tmp_path: Path
) -> None:
    settings.AUDIT_CHECKPOINT_DIR = str(tmp_path)
    record(3)
    before = timezone.now()
    note, err = run_both("audit_checkpoint")
    assert err.splitlines()[1:] == [
        f"published checkpoint 3 to tsa:{local_tsa.url}: ok",
        f"published checkpoint 3 to dir:{tmp_path}: ok",
    ]
    stamp = AuditCheckpointTimestamp.objects.get(checkpoint_size=3)
    moment = timestamp_verify(bytes(stamp.token), note.encode(), tsa_roots())
    assert before - timedelta(seconds=2) <= moment <= timezone.now() + timedelta(seconds=2)
    assert (tmp_path / "checkpoint-000000000003.tsr").read_bytes() == bytes(stamp.token)
    # What the bundle's README tells an auditor to run.
    checked = subprocess.run(
        ["openssl", "ts", "-verify", "-data", str(tmp_path / "checkpoint-000000000003.txt"),
         "-in", str(tmp_path / "checkpoint-000000000003.tsr"), "-CAfile", str(local_tsa.ca_file)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "Verification: OK" in checked.stdout


def test_a_time_stamp_over_other_bytes_does_not_verify(local_tsa, audit_key) -> None:
    record(1)
    note = run("audit_checkpoint")
    token = bytes(AuditCheckpointTimestamp.objects.get().token)
    from audit.timestamps import TimestampError

    with pytest.raises(TimestampError, match="does not verify"):
        timestamp_verify(token, note.replace("\n1\n", "\n2\n").encode(), tsa_roots())


def test_a_time_stamp_from_an_untrusted_tsa_is_refused(
    local_tsa, audit_key, settings, tmp_path: Path
) -> None:
    other = tsa_make(tmp_path)  # another CA altogether
    settings.AUDIT_TSA_CA_FILE = str(other / "ca.crt")
    record(1)
    _, err = run_both("audit_checkpoint")
    assert err.splitlines()[1].startswith(
        f"published checkpoint 1 to tsa:{local_tsa.url}: FAILED, will retry: the TSA's answer "
        "does not verify"
    )
    assert not AuditCheckpointTimestamp.objects.exists()


def test_the_bundle_carries_the_time_stamps_and_the_tsa_root(
    local_tsa, audit_key, tmp_path: Path
) -> None:
    import zipfile

    record(2)
    run("audit_checkpoint")
    run("audit_bundle", "--output", str(tmp_path / "evidence.zip"))
    with zipfile.ZipFile(tmp_path / "evidence.zip") as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "evidence")
    assert {"checkpoints/checkpoint-000000000002.tsr", "tsa-ca.pem"} <= names
    from audit import bundle_verify

    assert bundle_verify.main(["--bundle", str(tmp_path / "evidence")]) == 0
