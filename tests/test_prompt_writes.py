"""A write someone is waiting for (the webhook's one INSERT before Meta's 200) does not
queue behind other writers with SQLite's ever longer sleeps: it tries the write lock
again every millisecond, within the same timeout, and fails the same way after it."""

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import OperationalError, connection

from multichannel import durability
from multichannel.durability import written_promptly
from whatsapp.models import WebhookDelivery

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def write_lock_held(seconds: float) -> Iterator[None]:
    """Another writer (as the worker would be) holds SQLite's write lock for a while."""
    other = sqlite3.connect(connection.settings_dict["NAME"], check_same_thread=False)
    other.isolation_level = None
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(seconds, lambda: other.execute("COMMIT"))
    release.start()
    try:
        yield
    finally:
        release.join()
        other.close()


def keep() -> WebhookDelivery:
    delivery = WebhookDelivery(object="whatsapp_business_account", raw_body="{}")
    written_promptly(delivery.save)
    return delivery


def busy_timeout() -> int:
    connection.ensure_connection()
    return int(connection.connection.execute("PRAGMA busy_timeout").fetchone()[0])


def test_a_prompt_write_waits_for_the_lock_by_trying_often(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if connection.vendor != "sqlite":
        # Row locks, no database-wide write lock: the write is simply made.
        assert keep().pk is not None
        assert WebhookDelivery.objects.count() == 1
        return
    before = busy_timeout()
    slept: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    with write_lock_held(0.3):
        delivery = keep()
    assert WebhookDelivery.objects.get().pk == delivery.pk
    # It tried again every millisecond while the other writer held the lock...
    assert len(slept) >= 10
    assert set(slept) == {durability.PROMPT_RETRY_SECONDS}
    # ...and the connection waits as before for everything else.
    assert busy_timeout() == before


def test_a_prompt_write_still_gives_up_after_the_usual_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if connection.vendor != "sqlite":
        assert keep().pk is not None
        return
    before = busy_timeout()
    options = {**connection.settings_dict.get("OPTIONS", {}), "timeout": 0.2}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)
    with write_lock_held(1.0), pytest.raises(OperationalError, match="locked"):
        keep()
    assert not WebhookDelivery.objects.exists()
    assert busy_timeout() == before
