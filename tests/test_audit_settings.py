"""The audit settings: every variable is read from the environment, and bad values
are system check errors with stable ids (audit.E0xx, warnings audit.W0xx)."""

import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from audit.notes import generate_key

ROOT = Path(__file__).resolve().parent.parent
KEY = generate_key("multichannel.test/audit")


def audit_messages() -> dict[str, str]:
    return {m.id: m.msg for m in run_checks() if m.id and m.id.startswith("audit.")}


def test_the_defaults_configure_nothing_and_pass() -> None:
    assert audit_messages() == {}


def test_the_settings_come_from_the_environment(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DEBUG": "true",
        "AUDIT_SIGNING_KEY": f"  {KEY.text}\n",
        "AUDIT_CHECKPOINT_MINUTES": "15",
        "AUDIT_WITNESS_URLS": "https://a.example/w,https://b.example/w",
        "AUDIT_CHECKPOINT_DIR": str(tmp_path),
    }
    code = (
        "from django.conf import settings as s; print(s.AUDIT_SIGNING_KEY == "
        f"{KEY.text!r}, s.AUDIT_CHECKPOINT_MINUTES, s.AUDIT_WITNESS_URLS, s.AUDIT_LOG_ORIGIN == '')"
    )
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "multichannel.settings"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.stdout.strip() == (
        "True 15 ['https://a.example/w', 'https://b.example/w'] True"
    ), result.stderr


@override_settings(AUDIT_SIGNING_KEY="PRIVATE+KEY+not-a-key")
def test_an_unusable_signing_key_is_an_error() -> None:
    assert audit_messages() == {
        "audit.E001": "AUDIT_SIGNING_KEY: the signing key is not of the form name+keyid+base64key"
    }


@pytest.mark.parametrize("origin", ["two words", "a+b"])
def test_an_origin_with_a_space_or_plus_is_an_error(origin: str) -> None:
    with override_settings(AUDIT_LOG_ORIGIN=origin):
        assert set(audit_messages()) == {"audit.E002"}


@override_settings(AUDIT_SIGNING_KEY=KEY.text, AUDIT_LOG_ORIGIN="elsewhere.example/log")
def test_an_origin_that_is_not_the_key_name_is_a_warning() -> None:
    assert set(audit_messages()) == {"audit.W001"}


@pytest.mark.parametrize(
    ("setting", "value", "check"),
    [
        ("AUDIT_CHECKPOINT_MINUTES", 0, "audit.E003"),
        ("AUDIT_PUBLISH_TIMEOUT", 0, "audit.E007"),
        ("AUDIT_WITNESS_URLS", ["ftp://witness.example"], "audit.E004"),
        ("AUDIT_TSA_URL", "not a url", "audit.E004"),
    ],
)
def test_bad_numbers_and_urls_are_errors(setting: str, value: object, check: str) -> None:
    with override_settings(AUDIT_SIGNING_KEY=KEY.text, **{setting: value}):
        assert check in audit_messages()


@override_settings(AUDIT_SIGNING_KEY=KEY.text, AUDIT_TSA_URL="https://tsa.example/")
def test_a_tsa_without_its_root_certificate_is_an_error() -> None:
    assert set(audit_messages()) == {"audit.E005"}


@override_settings(AUDIT_SIGNING_KEY=KEY.text, AUDIT_CHECKPOINT_DIR="/nonexistent/checkpoints")
def test_a_missing_checkpoint_directory_is_a_warning() -> None:
    assert set(audit_messages()) == {"audit.W003"}


@override_settings(AUDIT_SIGNING_KEY="", AUDIT_WITNESS_URLS=["https://witness.example/"])
def test_publishing_without_a_key_is_a_warning() -> None:
    assert set(audit_messages()) == {"audit.W002"}
