"""Answering each end user's messages one at a time, in the order sent, on any channel.

A worker first takes the user's lease (a row with an expiry), then repeatedly takes the
oldest unfinished message and moves it one step: QUEUED -> ANSWERED (MKA1 is asked and
the response, the chain head, the audit event and the reply text are committed together)
-> DELIVERED (the channel sends the stored reply). A crash anywhere leaves a state that
the next run continues from: a message answered but not delivered is delivered without
asking MKA1 again. While a message waits to be retried, later messages of the same user
wait behind it, so replies never overtake each other.
"""

import logging
import math
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Literal, cast

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from audit.toolkit import db_datetime, db_names, rows_changed, update_row
from multichannel.channels import (
    DeliveryError,
    contextual_kind,
    deliver,
    fixed_reply,
    silenced,
    working,
)
from multichannel.durability import stored_despite_outage
from multichannel.limits import sender_notice_due, sender_token_take
from multichannel.media import MediaError, TurnInput, media_reply, turn_input_prepare
from multichannel.metrics import GIVE_UPS, RETRIES
from multichannel.mka1 import Channel, Mka1Error, client
from multichannel.models import ProcessingLease, UserMessage
from multichannel.redaction import exception_text, redact
from multichannel.selectors import (
    UNFINISHED,
    message_next_unfinished,
    messages_unfinished_exist,
)
from multichannel.services import (
    ChainConflictError,
    conversation_ensure,
    mka1_failure_record,
    turn_request,
    turn_store,
)

logger = logging.getLogger(__name__)

Outcome = Literal["done", "busy", "waiting"]
# The kinds a turn answers through MKA1 (the rest get a fixed reply, or none).
ANSWERED_BY_MKA1 = (
    UserMessage.Kind.TEXT,
    UserMessage.Kind.AUDIO,
    UserMessage.Kind.IMAGE,
    UserMessage.Kind.DOCUMENT,
)

# What an answer (or a fixed reply, or giving up) sets on the message.
ANSWER_FIELDS = [
    "state",
    "reply_text",
    "turn",
    "attempts",
    "next_attempt_at",
    "limited",
    "error",
    "updated_at",
]

# --- the lease ---------------------------------------------------------------------


# Taken, renewed and ended several times a message: plain statements (the ORM's UPDATE
# cost several times the statement, docs/benchmarks.md).
_LEASE, _HOLDER, _OWNER, _EXPIRES = db_names(ProcessingLease, "end_user", "owner", "expires_at")
_LEASE_TAKE = (
    f"UPDATE {_LEASE} SET {_OWNER} = %s, {_EXPIRES} = %s "  # noqa: S608
    f"WHERE {_HOLDER} = %s AND ({_EXPIRES} <= %s OR {_OWNER} = %s)"
)
_LEASE_END = (
    f"UPDATE {_LEASE} SET {_OWNER} = '', {_EXPIRES} = %s "  # noqa: S608
    f"WHERE {_HOLDER} = %s AND {_OWNER} = %s"
)


def lease_acquire(end_user_id: str, owner: str) -> bool:
    now = timezone.now()
    expires = now + timedelta(seconds=settings.TURN_LEASE_SECONDS)
    # Ours already, or run out: taken (or renewed, nearly always) in one statement.
    taken = [owner, db_datetime(expires), end_user_id, db_datetime(now), owner]
    if rows_changed(_LEASE_TAKE, taken):
        return True
    try:
        with transaction.atomic():
            ProcessingLease.objects.create(end_user_id=end_user_id, owner=owner, expires_at=expires)
    except IntegrityError:
        return False  # someone else holds a live lease
    return True


def lease_release(end_user_id: str, owner: str) -> None:
    # A lease left behind would keep everyone off this user's messages until it expires.
    # Ended, not deleted: the user's next message takes the row back with one UPDATE.
    stored_despite_outage(
        lambda: rows_changed(_LEASE_END, [db_datetime(timezone.now()), end_user_id, owner]),
        what=f"the release of the lease on {end_user_id}",
        wait=client().wait,
    )


# --- the loop ----------------------------------------------------------------------


@dataclass
class ProcessResult:
    outcome: Outcome
    retry_at: datetime | None = None


# The lease is renewed before a step once this share of it has been used since it was
# last taken: every step starts with at least the rest of it ahead, and the quick steps
# of a message (well under a second each) renew nothing.
LEASE_RENEW_AFTER = 0.1
lease_clock = time.monotonic


def user_messages_process(*, end_user_id: str) -> ProcessResult:
    """Answer and deliver this user's unfinished messages, oldest first."""
    owner = uuid.uuid4().hex
    while True:
        taken_at = lease_clock()
        if not lease_acquire(end_user_id, owner):
            return ProcessResult("busy")  # the holder will get to our message too
        try:
            result = _drain(end_user_id, owner, taken_at)
        finally:
            lease_release(end_user_id, owner)
        if result.outcome == "waiting":
            return result
        # A message stored after our last look found the lease taken and left it to
        # us; look once more now that the lease is free.
        if not messages_unfinished_exist(end_user_id):
            return result


def _drain(end_user_id: str, owner: str, taken_at: float) -> ProcessResult:
    while True:
        message = message_next_unfinished(end_user_id)
        if message is None:
            return ProcessResult("done")
        if message.next_attempt_at and message.next_attempt_at > timezone.now():
            return ProcessResult("waiting", message.next_attempt_at)
        if not _step(message):
            return ProcessResult("waiting", message.next_attempt_at)
        # Renewed before the next step once a tenth of it is used (a slow MKA1 or Graph
        # call). If a step outlasted the lease and another worker took over, stop: it
        # carries on from the stored state.
        if lease_clock() - taken_at >= settings.TURN_LEASE_SECONDS * LEASE_RENEW_AFTER:
            taken_at = lease_clock()
            if not lease_acquire(end_user_id, owner):
                return ProcessResult("busy")


def _step(message: UserMessage) -> bool:
    """Move one message one step. False when it must wait for a retry."""
    if message.end_user.erased_at is not None:
        # Their erasure has begun: nothing more is answered or sent.
        from multichannel.privacy import message_of_erased_end_user  # privacy builds on us

        message_of_erased_end_user(message)
        return True
    try:
        if message.state == UserMessage.State.QUEUED:
            return _answer(message)
        return _deliver(message)
    except Exception as exc:
        # A bug or an outage we did not foresee: retried with backoff like a transient
        # failure, and given up on after TURN_MAX_ATTEMPTS, so one bad message cannot
        # hold the user's later messages back for ever.
        logger.exception("message %s: unexpected failure", message.pk)
        message.refresh_from_db()
        return _retry_later(message, exc)


def _answer(message: UserMessage) -> bool:
    if message.kind == UserMessage.Kind.TEXT:
        # A text that is a command only in its context (YES after DELETE MY DATA).
        kind = contextual_kind(message)
        if kind is not None:
            message.kind = kind
            message.save(update_fields=["kind", "updated_at"])
    if silenced(message):
        # The user asked for no messages (WhatsApp STOP): nothing is asked or sent.
        message.error = "not answered: the user opted out"
        _mark_answered(message, reply_text="")
        return True
    try:
        fixed = fixed_reply(message)
    except Mka1Error as exc:  # a reply that asks MKA1 something (a reaction's feedback)
        return _retry_later(message, exc) if exc.transient else _give_up(message, exc)
    if fixed is not None:
        _mark_answered(message, reply_text=fixed)
        return True
    # Admitted once: a retry after a failure does not count against the sender again.
    if message.attempts == 0 and not sender_token_take(end_user_id=message.end_user_id):
        _mark_limited(message)
        return True
    with working(message):
        try:
            prepared = turn_input_prepare(message)
        except (MediaError, Mka1Error) as exc:  # a transcription or upload is audited there
            return _retry_later(message, exc) if exc.transient else _give_up(message, exc)
        return _ask(message, prepared)


def _ask(message: UserMessage, prepared: TurnInput) -> bool:
    conversation = None
    channel = cast(Channel, message.channel)
    operation = "conversations.create"
    try:
        conversation = conversation_ensure(end_user=message.end_user, channel=channel)
        operation = "responses.create"
        metadata = {"message_id": message.external_id} if message.external_id else None
        response = turn_request(
            conversation=conversation, channel=channel, text=prepared.mka1, metadata=metadata
        )

        def store() -> None:
            with transaction.atomic():
                turn = turn_store(
                    conversation=conversation,
                    channel=channel,
                    text=prepared.text,
                    response=response,
                    context={**_context(message), "input": prepared.audit},
                )
                _mark_answered(message, reply_text=turn.output_text, turn=turn)

        stored_despite_outage(store, what=f"the answer to message {message.pk}", wait=client().wait)
    except ChainConflictError as exc:
        return _retry_later(message, exc)
    except Mka1Error as exc:
        gives_up = not exc.transient or message.attempts + 1 >= settings.TURN_MAX_ATTEMPTS
        mka1_failure_record(
            channel=channel,
            operation=operation,
            end_user_id=message.end_user_id,
            exc=exc,
            conversation_id=conversation.mka1_conversation_id if conversation else None,
            context={**_context(message), "attempt": message.attempts + 1, "gave_up": gives_up},
        )
        if exc.transient:
            return _retry_later(message, exc)
        _give_up(message, exc)
    return True


def _context(message: UserMessage) -> dict[str, str]:
    context = {"message_id": str(message.pk)}
    if message.external_id:
        context[f"{message.channel}_message_id"] = message.external_id
    return context


def _mark_answered(message: UserMessage, *, reply_text: str, turn: object = None) -> None:
    message.state = UserMessage.State.ANSWERED
    message.reply_text = reply_text
    message.turn = turn  # type: ignore[assignment]
    message.attempts = 0
    message.next_attempt_at = None
    update_row(message, ANSWER_FIELDS)


def _mark_limited(message: UserMessage) -> None:
    """Over the sender's limit: no MKA1 call. The first such message in a while gets a
    polite notice; the rest get no reply at all (an empty reply sends nothing)."""
    logger.info("message %s: over the sender's rate limit", message.pk)
    message.limited = True
    message.error = "over the sender's rate limit: not sent to MKA1"
    notice = sender_notice_due(end_user_id=message.end_user_id)
    _mark_answered(message, reply_text=settings.SENDER_LIMIT_REPLY if notice else "")


def _give_up(message: UserMessage, exc: Exception) -> bool:
    """MKA1 said no for good, a file cannot be used, or something kept failing: tell
    the user (the failure is audited). A message that expects no reply (a reaction)
    gets none. Returns True: the message moved on."""
    logger.warning("message %s: giving up: %s", message.pk, exc)
    message.error = error_text(exc)
    if isinstance(exc, MediaError):
        reply = media_reply(exc)
    elif message.kind in ANSWERED_BY_MKA1:
        reply = settings.FAILURE_REPLY
    else:
        reply = ""
    _mark_answered(message, reply_text=reply)
    return True


def error_text(exc: Exception) -> str:
    """How a failure is kept on the message: our own errors by their (redacted) text,
    anything unexpected by its type and redacted text."""
    if isinstance(exc, Mka1Error | DeliveryError | ChainConflictError | MediaError):
        return redact(str(exc))
    return exception_text(exc)


def _deliver(message: UserMessage) -> bool:
    try:
        deliver(message)
    except DeliveryError as exc:
        if exc.transient:
            return _retry_later(message, exc)
        logger.warning("message %s: delivery failed permanently: %s", message.pk, exc)
        message.state = UserMessage.State.FAILED
        message.error = error_text(exc)
        message.save(update_fields=["state", "error", "updated_at"])
        return True
    message.state = UserMessage.State.DELIVERED
    message.attempts = 0
    message.next_attempt_at = None
    # The reply went out: saving that through a brief outage keeps a retry from
    # preparing (and for LOGIN, issuing) it again.
    stored_despite_outage(
        partial(update_row, message, ["state", "attempts", "next_attempt_at", "updated_at"]),
        what=f"the delivery of message {message.pk}",
        wait=client().wait,
    )
    return True


def _retry_later(message: UserMessage, exc: Exception) -> bool:
    message.attempts += 1
    message.error = error_text(exc)
    if message.attempts >= settings.TURN_MAX_ATTEMPTS:
        logger.warning("message %s: giving up after %d attempts", message.pk, message.attempts)
        GIVE_UPS.labels(message.state).inc()
        if message.state == UserMessage.State.QUEUED:
            _give_up(message, exc)
            return True
        message.state = UserMessage.State.FAILED
        message.save(update_fields=["state", "attempts", "error", "updated_at"])
        return True
    RETRIES.labels(message.state).inc()
    message.next_attempt_at = timezone.now() + timedelta(seconds=retry_delay(message, exc))
    message.save(update_fields=["attempts", "error", "next_attempt_at", "updated_at"])
    logger.info(
        "message %s: retry %d at %s (%s)",
        message.pk,
        message.attempts,
        message.next_attempt_at.isoformat(timespec="seconds"),
        message.error,
    )
    return False


def retry_delay(message: UserMessage, exc: Exception) -> float:
    """Seconds until the message's next attempt (retry_delay_for)."""
    return retry_delay_for(message.attempts, exc)


def retry_delay_for(attempts: int, exc: Exception) -> float:
    """Seconds until the next attempt after `attempts` failures: what the server asked
    for (Retry-After), else doubling from TURN_RETRY_SECONDS, spread a little, never
    above RETRY_DELAY_MAX_SECONDS (the user's later messages wait behind this one)."""
    cap = float(settings.RETRY_DELAY_MAX_SECONDS)
    asked = getattr(exc, "retry_after", None)
    retry_after = float(asked) if isinstance(asked, int | float) and math.isfinite(asked) else None
    backoff = float(settings.TURN_RETRY_SECONDS) * 2 ** min(attempts - 1, 32)
    delay = min(cap, retry_after if retry_after is not None else backoff)
    return min(cap, delay * random.uniform(1.0, 1.25))  # noqa: S311 (not cryptography)


# --- recovery ----------------------------------------------------------------------


def users_with_due_messages() -> list[str]:
    """End users with unfinished messages that are due and nobody is working on."""
    now = timezone.now()
    live_leases = ProcessingLease.objects.filter(expires_at__gt=now).values("end_user_id")
    return list(
        UserMessage.objects.filter(state__in=UNFINISHED)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .exclude(end_user_id__in=live_leases)
        .values_list("end_user_id", flat=True)
        .distinct()
    )


def last_live_lease_expiry() -> datetime | None:
    """When the last lease that is live now runs out (None when none is)."""
    leases = ProcessingLease.objects.filter(expires_at__gt=timezone.now())
    last: datetime | None = leases.aggregate(last=Max("expires_at"))["last"]
    return last
