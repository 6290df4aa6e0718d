"""Keeping what an outside service already did when our database is briefly away.

Once MKA1 has answered or the Graph API has accepted a reply, the effect has happened;
failing to store it would make a retry repeat it (a second MKA1 call, a second reply).
So a database that is locked or unreachable for a moment is waited for, a bounded
number of times, instead of being treated like any other failure."""

import logging
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
