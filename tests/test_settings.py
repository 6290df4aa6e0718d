"""Configuration: production refuses to start without secrets; checks catch contradictions."""

from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from tests.support.stack import run_manage


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    result = run_manage(tmp_path, "check", DEBUG="false", MKA1_API_KEY="test-key-not-real")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_refuses_the_development_secret_key(tmp_path: Path) -> None:
    result = run_manage(
        tmp_path,
        "check",
        DEBUG="false",
        SECRET_KEY="django-insecure-copied-from-a-tutorial",
        MKA1_API_KEY="test-key-not-real",
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_to_start_without_an_mka1_key(tmp_path: Path) -> None:
    result = run_manage(tmp_path, "check", DEBUG="false", SECRET_KEY="test-" + "x" * 50)
    assert result.returncode != 0
    assert "MKA1_API_KEY must be set" in result.stderr


def test_production_with_both_secrets_passes_the_checks(tmp_path: Path) -> None:
    result = run_manage(
        tmp_path,
        "check",
        DEBUG="false",
        SECRET_KEY="test-" + "x" * 50,
        MKA1_API_KEY="test-key-not-real",
        ALLOWED_HOSTS="example.test",
        WHATSAPP_VERIFY_TOKEN="test-verify",
        WHATSAPP_APP_SECRET="test-secret",
        WHATSAPP_TOKEN="test-token",
        WHATSAPP_PHONE_NUMBER_ID="123",
    )
    assert result.returncode == 0, result.stderr


def test_development_defaults_to_the_sandbox_without_any_variable(tmp_path: Path) -> None:
    result = run_manage(
        tmp_path,
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings as s; print(s.SANDBOX, s.MKA1_BASE_URL, s.MKA1_MODEL)",
        DEBUG="true",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "sandbox://mka1", "meetkai:functionary-pt"]


def _check_ids() -> set[str]:
    return {message.id for message in run_checks() if message.id}


@override_settings(MKA1_CHAIN_MODE="sideways")
def test_unknown_chain_mode_is_a_system_check_error() -> None:
    assert "multichannel.E001" in _check_ids()


@override_settings(SANDBOX=True, DEBUG=False)
def test_sandbox_with_debug_off_is_a_system_check_error() -> None:
    assert "multichannel.E002" in _check_ids()


@override_settings(SANDBOX=False, DEBUG=True, MKA1_BASE_URL="sandbox://mka1")
def test_sandbox_url_without_sandbox_is_a_system_check_error() -> None:
    assert "multichannel.E003" in _check_ids()


@override_settings(SANDBOX=True, DEBUG=True, MKA1_BASE_URL="ftp://mka1.test")
def test_non_http_base_url_is_a_system_check_error() -> None:
    assert "multichannel.E004" in _check_ids()


@pytest.mark.parametrize("name", ["MKA1_TIMEOUT", "MKA1_CONNECT_TIMEOUT", "TURN_RETRY_SECONDS"])
def test_non_positive_timeouts_are_system_check_errors(name: str) -> None:
    with override_settings(**{name: 0}):
        assert "multichannel.E005" in _check_ids()


@override_settings(SANDBOX=True, DEBUG=True)
def test_default_test_configuration_passes_every_check() -> None:
    assert not [m for m in run_checks() if m.is_serious()]
