"""Configuration: production refuses to start without secrets; checks catch contradictions."""

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from multichannel.limits import rate_parse
from tests.support.stack import PRODUCTION_ENV, ROOT, run_manage


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
        SITE_URL="https://example.test",
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


def test_sandbox_with_debug_off_is_refused_when_settings_load(tmp_path: Path) -> None:
    # Servers such as gunicorn run no system checks: the refusal is in the settings.
    result = run_manage(
        tmp_path,
        "shell",
        "-c",
        "from django.conf import settings; print('started', settings.SANDBOX)",
        DEBUG="false",
        SANDBOX="true",
        SECRET_KEY="test-" + "x" * 50,
        MKA1_API_KEY="test-key-not-real",
    )
    assert result.returncode != 0
    assert "started" not in result.stdout
    assert "SANDBOX is on while DEBUG is off" in result.stderr


@override_settings(DEBUG=False, SITE_URL="http://multichannel.example.test")
def test_a_plain_http_site_url_in_production_is_a_system_check_error() -> None:
    assert "multichannel.E012" in _check_ids()


@override_settings(DEBUG=False, SITE_URL="https://multichannel.example.test")
def test_an_https_site_url_in_production_passes() -> None:
    assert "multichannel.E012" not in _check_ids()


@override_settings(
    DEBUG=False,
    SITE_URL="https://multichannel.example.test",
    WEB_CONCURRENCY=3,
    CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
)
def test_a_per_process_cache_with_several_web_processes_is_a_system_check_error() -> None:
    assert "multichannel.E013" in _check_ids()


@override_settings(
    DEBUG=False,
    SITE_URL="https://multichannel.example.test",
    WEB_CONCURRENCY=1,
    CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
)
def test_a_per_process_cache_with_one_web_process_is_fine() -> None:
    assert "multichannel.E013" not in _check_ids()


def test_production_without_redis_shares_counters_through_files(tmp_path: Path) -> None:
    result = run_manage(
        tmp_path,
        "shell",
        "-c",
        "from django.conf import settings; print(settings.CACHES['default']['BACKEND'])",
        **PRODUCTION_VARS,
        CACHE_DIR=str(tmp_path / "cache"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("FileBasedCache")


PRODUCTION_VARS = PRODUCTION_ENV


@pytest.mark.parametrize("name", ["MKA1_API_KEY", "WHATSAPP_TOKEN", "WHATSAPP_APP_SECRET"])
def test_a_secret_with_a_trailing_newline_is_stripped(tmp_path: Path, name: str) -> None:
    value = "test-secret-value-0123456789"
    result = run_manage(
        tmp_path,
        "shell",
        "-c",
        f"from django.conf import settings; print(repr(settings.{name}))",
        **{**PRODUCTION_VARS, name: value + "\n"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(repr(value))


@pytest.mark.parametrize("bad", ["test-sec\nret-value", "test-secret value", "test-\x7fsecret"])
def test_a_secret_with_whitespace_or_control_characters_inside_is_refused(
    tmp_path: Path, bad: str
) -> None:
    result = run_manage(tmp_path, "check", **{**PRODUCTION_VARS, "WHATSAPP_TOKEN": bad})
    assert result.returncode != 0
    assert "WHATSAPP_TOKEN contains whitespace or control characters" in result.stderr
    assert bad not in result.stderr


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


@pytest.mark.parametrize("pool", [{"DATABASE_POOL_MAX_SIZE": -1}, {"DATABASE_POOL_TIMEOUT": 0}])
def test_a_pool_of_negative_size_or_no_timeout_is_a_system_check_error(
    pool: dict[str, float],
) -> None:
    assert "multichannel.E017" not in _check_ids()
    with override_settings(**pool):
        assert "multichannel.E017" in _check_ids()


@pytest.mark.parametrize("rate", ["120", "many/min", "0/min", "120/fortnight", "-1/s", "120/"])
@pytest.mark.parametrize("name", ["API_THROTTLE_READ", "API_THROTTLE_SEND"])
def test_a_rate_that_is_not_one_is_a_system_check_error(name: str, rate: str) -> None:
    with override_settings(**{name: rate}):
        assert "multichannel.E016" in _check_ids()


@pytest.mark.parametrize(
    ("rate", "parsed"),
    [("120/min", (120, 60)), ("5/minute", (5, 60)), ("1/s", (1, 1)), ("7/hour", (7, 3600)),
     ("500/day", (500, 86400))],
)  # fmt: skip
def test_rates_read_as_before(rate: str, parsed: tuple[int, int]) -> None:
    # What Django REST framework accepted keeps working: the period by its first letter.
    assert rate_parse(rate) == parsed
    with override_settings(API_THROTTLE_READ=rate):
        assert "multichannel.E016" not in _check_ids()


@override_settings(SANDBOX=True, DEBUG=True)
def test_default_test_configuration_passes_every_check() -> None:
    assert not [m for m in run_checks() if m.is_serious()]


def test_env_example_lists_every_variable_the_settings_read() -> None:
    import re

    source = (ROOT / "multichannel" / "settings.py").read_text()
    read = set(re.findall(r"""(?:env(?:\.\w+)?|_secret)\(\s*"([A-Z][A-Z0-9_]+)\"""", source))
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert read, "no variables found: the pattern no longer matches settings.py"
    assert sorted(read - listed) == []


def test_the_old_failure_reply_name_still_works_with_a_warning(tmp_path: Path) -> None:
    result = run_manage(
        tmp_path,
        "shell",
        "-c",
        "from django.conf import settings; print(settings.FAILURE_REPLY)",
        DEBUG="true",
        PYTHONWARNINGS="always::DeprecationWarning",
        WHATSAPP_FAILURE_REPLY="Old-style apology.",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("Old-style apology.")
    assert "WHATSAPP_FAILURE_REPLY is deprecated" in result.stderr


def test_production_installs_and_migrates_no_sandbox_table(tmp_path: Path) -> None:
    migrated = run_manage(tmp_path, "migrate", "-v0", **PRODUCTION_VARS)
    assert migrated.returncode == 0, migrated.stderr
    import sqlite3

    tables = {
        row[0]
        for row in sqlite3.connect(tmp_path / "db.sqlite3").execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    }
    assert "multichannel_usermessage" in tables
    assert not [name for name in tables if name.startswith("sandbox_")]
    demo = run_manage(tmp_path, "demo", **PRODUCTION_VARS)
    assert demo.returncode != 0
    assert "Unknown command: 'demo'" in demo.stderr


def _settings_shown(tmp_path: Path, expression: str, **env: str) -> Any:
    """`expression` over `settings` (as `s`), evaluated in a fresh process with `env`, as
    JSON."""
    code = f"import json; from django.conf import settings as s; print(json.dumps({expression}))"
    result = run_manage(tmp_path, "shell", "--no-imports", "-c", code, DEBUG="true", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_consumer_of_many_threads_gets_a_queue_connection_for_each(tmp_path: Path) -> None:
    # redis-py's pools stop at 100 connections by default; each consumer thread blocks
    # on the queue with one of its own.
    shown = _settings_shown(
        tmp_path,
        "s.HUEY['connection_pool'].max_connections",
        REDIS_URL="redis://127.0.0.1:6379/15",
        HUEY_WORKERS="200",
    )
    assert shown >= 200 + 32


def test_a_database_pool_replaces_persistent_connections(tmp_path: Path) -> None:
    database = (
        "[s.DATABASES['default']['OPTIONS'].get('pool'), s.DATABASES['default']['CONN_MAX_AGE']]"
    )
    postgres = "postgres://postgres@127.0.0.1:5432/multichannel"
    pooled = _settings_shown(tmp_path, database, DATABASE_URL=postgres, DATABASE_POOL_MAX_SIZE="16")
    assert pooled == [{"min_size": 2, "max_size": 16, "timeout": 30.0}, 0]
    # SQLite has no pool: the setting changes nothing there.
    assert _settings_shown(tmp_path, database, DATABASE_POOL_MAX_SIZE="16") == [None, 60]
