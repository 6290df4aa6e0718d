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
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, cast

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from audit.services import audit_event_record
from multichannel.channels import DeliveryError, deliver
from multichannel.durability import stored_despite_outage
from multichannel.mka1 import Channel, Mka1Error, Mka1TransientError, client
from multichannel.models import ProcessingLease, UserMessage
from multichannel.services import (
    ChainConflictError,
    conversation_ensure,
    turn_request,
    turn_store,
)

logger = logging.getLogger(__name__)

Outcome = Literal["done", "busy", "waiting"]
# Replies that need no MKA1 call, by message kind; LOGIN is added by the web app.
FixedReply = Callable[[UserMessage], str]
_fixed_replies: dict[str, FixedReply] = {
    UserMessage.Kind.UNSUPPORTED: lambda message: settings.WHATSAPP_UNSUPPORTED_REPLY,
}


def fixed_reply_register(kind: str, reply: FixedReply) -> None:
    _fixed_replies[kind] = reply


UNFINISHED = (UserMessage.State.QUEUED, UserMessage.State.ANSWERED)


# --- the lease ---------------------------------------------------------------------


def lease_acquire(end_user_id: str, owner: str) -> bool:
    now = timezone.now()
    expires = now + timedelta(seconds=settings.TURN_LEASE_SECONDS)
    with transaction.atomic():
        taken = ProcessingLease.objects.filter(
            Q(expires_at__lte=now) | Q(owner=owner), end_user_id=end_user_id
        ).update(owner=owner, expires_at=expires)
        if taken:
            return True
        try:
            with transaction.atomic():
                ProcessingLease.objects.create(
                    end_user_id=end_user_id, owner=owner, expires_at=expires
                )
        except IntegrityError:
            return False  # someone else holds a live lease
    return True


def lease_release(end_user_id: str, owner: str) -> None:
    # A lease left behind would keep everyone off this user's messages until it expires.
    stored_despite_outage(
        ProcessingLease.objects.filter(end_user_id=end_user_id, owner=owner).delete,
        what=f"the release of the lease on {end_user_id}",
        wait=client().wait,
    )


# --- the loop ----------------------------------------------------------------------


@dataclass
class ProcessResult:
    outcome: Outcome
    retry_at: datetime | None = None


def user_messages_process(*, end_user_id: str) -> ProcessResult:
    """Answer and deliver this user's unfinished messages, oldest first."""
    owner = uuid.uuid4().hex
    while True:
        if not lease_acquire(end_user_id, owner):
            return ProcessResult("busy")  # the holder will get to our message too
        try:
            result = _drain(end_user_id, owner)
        finally:
            lease_release(end_user_id, owner)
        if result.outcome == "waiting":
            return result
        # A message stored after our last look found the lease taken and left it to
        # us; look once more now that the lease is free.
        if not UserMessage.objects.filter(end_user_id=end_user_id, state__in=UNFINISHED).exists():
            return result


def _drain(end_user_id: str, owner: str) -> ProcessResult:
    while True:
        message = (
            UserMessage.objects.filter(end_user_id=end_user_id, state__in=UNFINISHED)
            .order_by("sent_at", "id")
            .first()
        )
        if message is None:
            return ProcessResult("done")
        if message.next_attempt_at and message.next_attempt_at > timezone.now():
            return ProcessResult("waiting", message.next_attempt_at)
        if not _step(message):
            return ProcessResult("waiting", message.next_attempt_at)
        # Renew before the next slow step. If a step outlasted the lease and another
        # worker took over, stop: it carries on from the stored state.
        if not lease_acquire(end_user_id, owner):
            return ProcessResult("busy")


def _step(message: UserMessage) -> bool:
    """Move one message one step. False when it must wait for a retry."""
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
    fixed = _fixed_replies.get(message.kind)
    if fixed is not None:
        _mark_answered(message, reply_text=fixed(message))
        return True
    conversation = None
    channel = cast(Channel, message.channel)
    try:
        conversation = conversation_ensure(end_user=message.end_user, channel=channel)
        metadata = {"message_id": message.external_id} if message.external_id else None
        response = turn_request(
            conversation=conversation, channel=channel, text=message.text, metadata=metadata
        )

        def store() -> None:
            with transaction.atomic():
                turn = turn_store(
                    conversation=conversation,
                    channel=channel,
                    text=message.text,
                    response=response,
                    context=_context(message),
                )
                _mark_answered(message, reply_text=turn.output_text, turn=turn)

        stored_despite_outage(store, what=f"the answer to message {message.pk}", wait=client().wait)
    except (Mka1TransientError, ChainConflictError) as exc:
        return _retry_later(message, exc)
    except Mka1Error as exc:
        conversation_id = conversation.mka1_conversation_id if conversation else None
        _give_up_on_mka1(message, exc, conversation_id=conversation_id)
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
    message.save(
        update_fields=[
            "state",
            "reply_text",
            "turn",
            "attempts",
            "next_attempt_at",
            "error",
            "updated_at",
        ]
    )


def _give_up_on_mka1(message: UserMessage, exc: Mka1Error, *, conversation_id: str | None) -> None:
    """MKA1 said no for good (or kept failing): audit the failure, apologise."""
    logger.warning("message %s: MKA1 failed permanently: %s", message.pk, exc)
    with transaction.atomic():
        audit_event_record(
            channel=message.channel,
            action="responses.create.failed",
            end_user_id=message.end_user_id,
            conversation_id=conversation_id,
            full_response=exc.body if isinstance(exc.body, dict) else None,
            api_key_fingerprint=client().key_fingerprint,
            context={**_context(message), "error": str(exc), "status": exc.status},
        )
        message.error = str(exc)
        _mark_answered(message, reply_text=settings.WHATSAPP_FAILURE_REPLY)


def _deliver(message: UserMessage) -> bool:
    try:
        deliver(message)
    except DeliveryError as exc:
        if exc.transient:
            return _retry_later(message, exc)
        logger.warning("message %s: delivery failed permanently: %s", message.pk, exc)
        message.state = UserMessage.State.FAILED
        message.error = str(exc)
        message.save(update_fields=["state", "error", "updated_at"])
        return True
    message.state = UserMessage.State.DELIVERED
    message.attempts = 0
    message.next_attempt_at = None
    message.save(update_fields=["state", "attempts", "next_attempt_at", "updated_at"])
    return True


def _retry_later(message: UserMessage, exc: Exception) -> bool:
    message.attempts += 1
    message.error = str(exc)
    if message.attempts >= settings.TURN_MAX_ATTEMPTS:
        logger.warning("message %s: giving up after %d attempts", message.pk, message.attempts)
        if message.state == UserMessage.State.QUEUED and isinstance(exc, Mka1Error):
            _give_up_on_mka1(message, exc, conversation_id=None)
            return True
        if message.state == UserMessage.State.QUEUED:
            _mark_answered(message, reply_text=settings.WHATSAPP_FAILURE_REPLY)
            return True
        message.state = UserMessage.State.FAILED
        message.save(update_fields=["state", "attempts", "error", "updated_at"])
        return True
    retry_after = getattr(exc, "retry_after", None)
    delay = retry_after or min(600.0, settings.TURN_RETRY_SECONDS * 2 ** (message.attempts - 1))
    delay *= random.uniform(1.0, 1.25)  # noqa: S311 (spread retries, not cryptography)
    message.next_attempt_at = timezone.now() + timedelta(seconds=delay)
    message.save(update_fields=["attempts", "error", "next_attempt_at", "updated_at"])
    logger.info("message %s: retry %d in %.0fs (%s)", message.pk, message.attempts, delay, exc)
    return False


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
