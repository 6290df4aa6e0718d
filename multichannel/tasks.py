"""Queued work (Huey). The database, not the queue, is the record of what is left to
do: a lost task is re-queued by `recover_unfinished` from the unfinished messages."""

from django.db import transaction
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task

from multichannel.processing import user_messages_process, users_with_due_messages


@db_task()  # type: ignore[untyped-decorator]
def process_end_user(end_user_id: str) -> str:
    result = user_messages_process(end_user_id=end_user_id)
    if result.outcome == "waiting" and result.retry_at is not None:
        process_end_user.schedule((end_user_id,), eta=result.retry_at)
    return result.outcome


@db_periodic_task(crontab(minute="*"))  # type: ignore[untyped-decorator]
def recover_unfinished() -> int:
    """Crash recovery: pick up messages whose task was lost or whose worker died."""
    users = users_with_due_messages()
    for end_user_id in users:
        process_end_user(end_user_id)
    return len(users)


def process_end_user_on_commit(end_user_id: str) -> None:
    # Only after commit: the worker must find the message we just stored.
    transaction.on_commit(lambda: process_end_user(end_user_id))
