"""Shared fixtures. Outgoing HTTP is faked with `responses` or served by the in-process
sandbox; nothing here talks to the internet."""

from collections.abc import Iterator

import pytest

from multichannel import mka1
from multichannel.models import EndUser
from multichannel.services import end_user_create


@pytest.fixture(autouse=True)
def _fresh_mka1_client() -> Iterator[None]:
    # The shared client is cached per process; each test gets one built from its settings.
    mka1.client.cache_clear()
    yield
    mka1.client.cache_clear()


@pytest.fixture
def end_user(db: None) -> EndUser:
    return end_user_create()
