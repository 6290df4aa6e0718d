"""Queued work (Huey). The database, not the queue, is the record of what is left to
do: a lost task is re-queued by `recover_unfinished` from the unfinished messages and
each channel's own unfinished work (a webhook delivery not yet fanned out)."""

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task, on_startup

from multichannel import channels
from multichannel.models import Erasure
from multichannel.privacy import (
    ErasureBusyError,
    ErasureStoppedError,
    UnderLegalHoldError,
    erasure_run,
    erasures_due,
    retention_run,
)
from multichannel.processing import (
    last_live_lease_expiry,
    user_messages_process,
    users_with_due_messages,
)

logger = logging.getLogger(__name__)


# A task that fails outright (the database unreachable or locked for too long) is tried
# again this many seconds later; each run carries on from the stored state, so a repeat
# is harmless.
PROCESS_RETRY_DELAY = 5


@db_task(retries=2, retry_delay=PROCESS_RETRY_DELAY)  # type: ignore[untyped-decorator]
def process_end_user(end_user_id: str) -> str:
    return _end_user_process(end_user_id)


def _end_user_process(end_user_id: str) -> str:
    result = user_messages_process(end_user_id=end_user_id)
    if result.outcome == "waiting" and result.retry_at is not None:
        process_end_user.schedule((end_user_id,), eta=result.retry_at)
    return result.outcome


def end_user_process_here(end_user_id: str) -> str:
    """What `process_end_user` does, in the calling task's thread: for a task that has
    just stored this person's messages (a webhook's fan-out), which saves the second
    task's trip through the queue. If it fails outright, the work is queued to be tried
    again as the task would have been."""
    try:
        return _end_user_process(end_user_id)
    except Exception:
        logger.exception("end user %s: answering failed; queued again", end_user_id)
        _queue_end_user(end_user_id, delay=PROCESS_RETRY_DELAY)
        return "queued"


def _queue_due_users(*, starting: bool = False) -> int:
    # First what the channels kept but have not turned into messages yet (webhook
    # deliveries); their fan-out queues its users itself.
    channel_work = channels.recover(starting=starting)
    users = users_with_due_messages()
    for end_user_id in users:
        process_end_user(end_user_id)
    # Erasures too: one whose task was lost, or whose retry is due.
    erasures = erasures_due()
    for erasure_id in erasures:
        erasure_continue(erasure_id)
    return channel_work + len(users) + len(erasures)


@db_periodic_task(crontab(minute="*"))  # type: ignore[untyped-decorator]
def recover_unfinished() -> int:
    """Crash recovery: pick up messages whose task was lost or whose worker died."""
    return _queue_due_users()


@db_task()  # type: ignore[untyped-decorator]
def recover_after_start() -> int:
    """Recovery as a consumer starts, so a restart finishes a crashed consumer's work
    without waiting for the next minute. Users whose lease is still live may be held by
    the process that died: look again just after the last of those leases runs out."""
    queued = _queue_due_users(starting=True)
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


def _queue_end_user(end_user_id: str, *, delay: float | None = None) -> None:
    """Queue `process_end_user` for this person (after `delay` seconds if given)."""
    try:
        if delay is None:
            process_end_user(end_user_id)
        else:
            process_end_user.schedule((end_user_id,), delay=delay)
    except Exception:
        # The message is committed; recovery queues it once the queue is back. Raising
        # here would turn a stored webhook into a 500 and a needless redelivery.
        logger.exception("could not queue work for end user %s; recovery will", end_user_id)


def process_end_user_on_commit(end_user_id: str) -> None:
    # Only after commit: the worker must find the message we just stored.
    transaction.on_commit(lambda: _queue_end_user(end_user_id))


# --- erasure and retention (multichannel.privacy) --------------------------------------

# How long a queued erasure waits for a turn in flight before trying again later.
ERASURE_LEASE_WAIT_SECONDS = 30.0
ERASURE_BUSY_RETRY_SECONDS = 5.0


@db_task()  # type: ignore[untyped-decorator]
def erasure_continue(erasure_id: int) -> str:
    """Carry an erasure on from where it stopped. A step that keeps failing is retried
    with backoff up to ERASURE_MAX_ATTEMPTS, then left for the operator (logged as an
    error, shown in the admin); a legal hold pauses it until lifted."""
    erasure = Erasure.objects.filter(pk=erasure_id).first()
    if erasure is None or erasure.finished:
        return "done"
    try:
        erasure_run(erasure, lease_wait=ERASURE_LEASE_WAIT_SECONDS)
    except UnderLegalHoldError as exc:
        logger.warning("%s", exc)
        return "held"
    except ErasureBusyError:
        erasure_continue.schedule((erasure_id,), delay=ERASURE_BUSY_RETRY_SECONDS)
        return "busy"
    except ErasureStoppedError:
        if erasure.attempts < settings.ERASURE_MAX_ATTEMPTS and erasure.next_attempt_at:
            erasure_continue.schedule((erasure_id,), eta=erasure.next_attempt_at)
        return "stopped"
    return "done"


def erasure_continue_on_commit(erasure_id: int) -> None:
    def queue() -> None:
        try:
            erasure_continue(erasure_id)
        except Exception:
            # The erasure is stored; recovery queues it once the queue is back.
            logger.exception("could not queue erasure %s; recovery will", erasure_id)

    transaction.on_commit(queue)


@db_periodic_task(crontab(minute="17", hour="3"))  # type: ignore[untyped-decorator]
def retention_daily() -> dict[str, object] | None:
    """Remove content older than CONTENT_RETENTION_DAYS (off unless set)."""
    if not settings.CONTENT_RETENTION_DAYS:
        return None
    return retention_run()
