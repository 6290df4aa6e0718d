"""Keeping what an outside service already did when our database is briefly away.

Once MKA1 has answered or the Graph API has accepted a reply, the effect has happened;
failing to store it would make a retry repeat it (a second MKA1 call, a second reply).
So a database that is locked or unreachable for a moment is waited for, a bounded
number of times, instead of being treated like any other failure."""

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

T = TypeVar("T")

# About 20 s in all: longer than a SQLite writer waits for a lock, or a database failover.
ATTEMPTS = 8


def stored_despite_outage(store: Callable[[], T], *, what: str, wait: Callable[[float], None]) -> T:
    """Run `store` (one atomic block) until it commits, retrying database outages."""
    for attempt in range(ATTEMPTS):
        try:
            return store()
        except (OperationalError, InterfaceError) as exc:
            if attempt == ATTEMPTS - 1:
                raise
            logger.warning("could not store %s yet (attempt %d): %s", what, attempt + 1, exc)
            if not connection.in_atomic_block:
                connection.close()  # a broken connection is reopened by the next query
            wait(min(5.0, 0.2 * 2**attempt))
    raise AssertionError("unreachable")


# How long a prompt writer sleeps between tries of SQLite's write lock.
PROMPT_RETRY_SECONDS = 0.001


def written_promptly(write: Callable[[], T]) -> T:
    """Run one short autocommit write that someone is waiting for (Meta, for a
    webhook's 200) without SQLite's own busy handler, which sleeps ever longer between
    tries (up to 100 ms at a time) while other writers (the worker's transactions) hold
    the database's one write lock: this tries again every millisecond instead, within
    the connection's usual timeout (SQLITE_BUSY_TIMEOUT), and then fails the same way.
    On other databases, or inside a transaction, it is just the write."""
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        return write()
    connection.ensure_connection()
    raw = connection.connection
    timeout = float(connection.settings_dict.get("OPTIONS", {}).get("timeout", 5.0))
    deadline = time.monotonic() + timeout
    # PRAGMAs on the driver's connection: how this connection waits, not data.
    waits = int(raw.execute("PRAGMA busy_timeout").fetchone()[0])
    raw.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                return write()
            except OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(PROMPT_RETRY_SECONDS)
    finally:
        raw.execute(f"PRAGMA busy_timeout = {waits}")
