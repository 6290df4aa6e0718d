"""Queued WhatsApp work (Huey): the fan-out of a kept webhook delivery into messages,
statuses and preference changes. The delivery row, not the queue, is the record of what
is left: a delivery whose task was lost is queued again by the core's recovery
(`deliveries_recover`, registered as the channel's `recover`)."""

import logging
from datetime import timedelta
from functools import partial

from django.db import transaction
from django.utils import timezone
from huey.contrib.djhuey import db_task

from multichannel.tasks import end_user_process_here
from whatsapp.selectors import deliveries_waiting
from whatsapp.services import delivery_fan_out

logger = logging.getLogger(__name__)

# The periodic recovery leaves deliveries this young to the task queued with them.
RECOVERY_GRACE = timedelta(seconds=30)


# A fan-out that fails outright (the database unreachable or locked for too long) is
# tried again soon; the delivery stays unprocessed until one succeeds, so a repeat is
# harmless and a give-up is picked up again by recovery.
@db_task(retries=2, retry_delay=5)  # type: ignore[untyped-decorator]
def webhook_fan_out(delivery_id: int) -> int:
    """Fan out a delivery (and any kept before it still waiting); how many it stored.
    The new messages of the delivery's sender (nearly every delivery has one) are then
    answered here, in this thread, instead of by a task queued for them; everyone
    else's are queued."""
    results = delivery_fan_out(delivery_id, answer_own=True)
    for result in results:
        logger.info(
            "webhook %s: %d new, %d redelivered, %d statuses",
            result.delivery_id,
            result.stored,
            result.duplicates,
            result.statuses_applied,
        )
    for result in results:
        if result.left_to_caller is not None:
            # After commit, as the task it stands in for was queued (in a worker, which
            # runs outside any transaction, that is now).
            transaction.on_commit(partial(end_user_process_here, result.left_to_caller))
    return len(results)


def webhook_fan_out_queue(delivery_id: int) -> None:
    """Queue the fan-out of a committed delivery. A queue that is down costs nothing:
    the delivery is kept, and recovery queues it once the queue is back (raising here
    would turn a stored webhook into a 500 and a needless redelivery)."""
    try:
        webhook_fan_out(delivery_id)
    except Exception:
        logger.exception("could not queue webhook %s; recovery will", delivery_id)


def deliveries_recover(*, starting: bool) -> int:
    """Queue the fan-out of the deliveries still waiting for one: a single task for the
    newest, which fans out every older one first. Periodically only deliveries older
    than RECOVERY_GRACE count (younger ones have their task in the queue); as a consumer
    starts, all of them. Returns how many were waiting."""
    received_before = None if starting else timezone.now() - RECOVERY_GRACE
    waiting = deliveries_waiting(received_before=received_before)
    if waiting.newest_id is not None:
        webhook_fan_out(waiting.newest_id)
    return waiting.count
