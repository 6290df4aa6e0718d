"""Queued work (Huey). The database, not the queue, is the record of what is left to
do: a lost task is re-queued by `recover_unfinished` from the unfinished messages."""

import logging
import threading
from datetime import timedelta

from django.db import transaction
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task, on_startup

from multichannel.processing import (
    last_live_lease_expiry,
    user_messages_process,
    users_with_due_messages,
)

logger = logging.getLogger(__name__)


# A task that fails outright (the database unreachable or locked for too long) is tried
# again soon; each run carries on from the stored state, so a repeat is harmless.
@db_task(retries=2, retry_delay=5)  # type: ignore[untyped-decorator]
def process_end_user(end_user_id: str) -> str:
    result = user_messages_process(end_user_id=end_user_id)
    if result.outcome == "waiting" and result.retry_at is not None:
        process_end_user.schedule((end_user_id,), eta=result.retry_at)
    return result.outcome


def _queue_due_users() -> int:
    users = users_with_due_messages()
    for end_user_id in users:
        process_end_user(end_user_id)
    return len(users)


@db_periodic_task(crontab(minute="*"))  # type: ignore[untyped-decorator]
def recover_unfinished() -> int:
    """Crash recovery: pick up messages whose task was lost or whose worker died."""
    return _queue_due_users()


@db_task()  # type: ignore[untyped-decorator]
def recover_after_start() -> int:
    """Recovery as a consumer starts, so a restart finishes a crashed consumer's work
    without waiting for the next minute. Users whose lease is still live may be held by
    the process that died: look again just after the last of those leases runs out."""
    queued = _queue_due_users()
    expiry = last_live_lease_expiry()
    if expiry is not None:
        recover_unfinished.schedule(eta=expiry + timedelta(seconds=1))
    return queued


_start_lock = threading.Lock()
_recovery_queued = False


@on_startup()  # type: ignore[untyped-decorator]
def _recover_on_start() -> None:
    # Startup hooks run in every worker thread; one recovery per process is enough.
    global _recovery_queued
    with _start_lock:
        if _recovery_queued:
            return
        _recovery_queued = True
    recover_after_start()


def _queue_end_user(end_user_id: str) -> None:
    try:
        process_end_user(end_user_id)
    except Exception:
        # The message is committed; recovery queues it once the queue is back. Raising
        # here would turn a stored webhook into a 500 and a needless redelivery.
        logger.exception("could not queue work for end user %s; recovery will", end_user_id)


def process_end_user_on_commit(end_user_id: str) -> None:
    # Only after commit: the worker must find the message we just stored.
    transaction.on_commit(lambda: _queue_end_user(end_user_id))
