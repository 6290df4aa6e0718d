"""Skipping what this machine cannot run, except in CI, where everything must run."""

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def need(available: bool, reason: str) -> None:
    """Skip a test whose service or tool is missing, except in CI (CI=true), where a
    skipped test is a failure."""
    if available:
        return
    if in_ci():
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)
