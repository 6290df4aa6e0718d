"""Write paths of the shared core: end users, their conversation, and its turns.

Both channels go through these, so a turn on WhatsApp and a turn on the web extend the
same MKA1 conversation and the same previous_response_id chain.
"""

import logging
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import audit_event_record
from audit.toolkit import db_datetime, db_names, insert_row, rows_changed
from multichannel.durability import stored_despite_outage
from multichannel.limits import window_count
from multichannel.mka1 import (
    Channel,
    Mka1Error,
    Mka1Object,
    Mka1PermanentError,
    client,
    is_response_id,
)
from multichannel.models import Conversation, EndUser, Turn, UserMessage
from multichannel.redaction import redact, redact_value
from multichannel.selectors import conversation_of_end_user

logger = logging.getLogger(__name__)


class ChainConflictError(Exception):
    """The conversation's head moved while a turn was in flight (a concurrent turn)."""


def end_user_create() -> EndUser:
    return EndUser.objects.create()


def conversation_ensure(*, end_user: EndUser, channel: Channel) -> Conversation:
    """The end user's conversation, created through MKA1 on first use and then reused."""
    existing = conversation_of_end_user(end_user=end_user)
    if existing is not None:
        return existing
    mka1 = client()
    created = mka1.create_conversation(end_user.id)
    if not created.id:
        raise Mka1PermanentError("MKA1 created a conversation without an id")

    def store() -> Conversation:
        with transaction.atomic():
            conversation = Conversation.objects.create(
                end_user=end_user, mka1_conversation_id=created.id
            )
            audit_event_record(
                channel=channel,
                action=AuditAction.CONVERSATIONS_CREATE,
                end_user_id=end_user.id,
                conversation_id=created.id,
                full_response=created,
                api_key_fingerprint=mka1.key_fingerprint,
            )
        return conversation

    try:
        # MKA1 has created it: a database locked or away for a moment is waited for,
        # or a retry would create a second one, orphaned at MKA1.
        return stored_despite_outage(
            store, what=f"the conversation of {end_user.id}", wait=mka1.wait
        )
    except IntegrityError:
        # Another worker created it first; theirs is the one in use from now on. Any
        # other integrity error is not a race and must not be taken for one.
        existing = conversation_of_end_user(end_user=end_user)
        if existing is None:
            raise
        logger.warning("conversation for %s created twice; keeping the first", end_user.id)
        return existing


def mka1_failure_record(
    *,
    channel: str,
    operation: str,
    end_user_id: str,
    exc: Mka1Error,
    response_id: str | None = None,
    conversation_id: str | None = None,
    context: Mapping[str, Any] | None = None,
    bounded: bool = False,
) -> None:
    """Audit a failed MKA1 call as `<operation>.failed`, with the status and MKA1's error
    body. `bounded` (calls a signed-in user can repeat at will) records at most
    AUDIT_FAILURES_PER_USER_HOUR per user per hour, so probing cannot flood the ledger;
    the last one recorded says so, and the rest are only logged."""
    limit = settings.AUDIT_FAILURES_PER_USER_HOUR
    count = 0
    if bounded:
        count = window_count(f"audit-failures:{end_user_id}", seconds=3600)
        if count > limit:
            logger.warning(
                "%s failed for %s (%s); not recorded: over %d this hour",
                operation,
                end_user_id,
                exc.status,
                limit,
            )
            return
    details: dict[str, Any] = {
        **(context or {}),
        "status": exc.status,
        "error": redact(str(exc)),
        "transient": exc.transient,
    }
    if bounded and count == limit:
        details["further_failures_this_hour"] = "logged, not recorded"
    audit_event_record(
        channel=channel,
        action=AuditAction.failed(operation),
        end_user_id=end_user_id,
        response_id=response_id,
        conversation_id=conversation_id,
        full_response=redact_value(exc.body) if isinstance(exc.body, dict) else None,
        api_key_fingerprint=client().key_fingerprint,
        context=details,
    )


def turn_request(
    *,
    conversation: Conversation,
    channel: Channel,
    text: str | list[dict[str, Any]],
    metadata: Mapping[str, str] | None = None,
) -> Mka1Object:
    """Ask MKA1 for the next response in the conversation (no database writes). `text`
    is the input: a string, or input items (a photo or a document with its question)."""
    response = client().create_response(
        conversation.end_user_id,
        conversation_id=conversation.mka1_conversation_id,
        message=text,
        previous_response_id=conversation.previous_response_id,
        channel=channel,
        metadata=metadata,
    )
    if not is_response_id(response.id):
        raise Mka1PermanentError(f"MKA1 answered with an unusable response id {response.id!r}")
    return response


# A turn's link in the conversation's chain: plain statements (the ORM's lock, read and
# save of the row cost several times the statements, docs/benchmarks.md).
_CONVERSATION, _CONVERSATION_ID, _HEAD, _CHANGED = db_names(
    Conversation, "id", "previous_response_id", "updated_at"
)
_CHAIN_ADVANCE_FROM_NONE = (
    f"UPDATE {_CONVERSATION} SET {_HEAD} = %s, {_CHANGED} = %s "  # noqa: S608
    f"WHERE {_CONVERSATION_ID} = %s AND {_HEAD} IS NULL"
)
_CHAIN_ADVANCE = (
    f"UPDATE {_CONVERSATION} SET {_HEAD} = %s, {_CHANGED} = %s "  # noqa: S608
    f"WHERE {_CONVERSATION_ID} = %s AND {_HEAD} = %s"
)


def turn_store(
    *,
    conversation: Conversation,
    channel: Channel,
    text: str,
    response: Mka1Object,
    context: Mapping[str, Any] | None = None,
) -> Turn:
    """Store a response, advance the chain and audit it, all or nothing.

    `conversation.previous_response_id` must still be the head the request was built
    on; if another turn advanced it meanwhile, nothing is written.
    """
    expected_head = conversation.previous_response_id
    with transaction.atomic():
        # The chain moves on only from the head the request was built on: one UPDATE
        # that locks the row (a concurrent turn waits, then finds the head moved).
        advance = _CHAIN_ADVANCE_FROM_NONE if expected_head is None else _CHAIN_ADVANCE
        moved_on = rows_changed(
            advance,
            [
                response.id,
                db_datetime(timezone.now()),
                conversation.pk,
                *([] if expected_head is None else [expected_head]),
            ],
        )
        if not moved_on:
            head = (
                Conversation.objects.filter(pk=conversation.pk)
                .values_list("previous_response_id", flat=True)
                .first()
            )
            raise ChainConflictError(
                f"conversation {conversation.mka1_conversation_id} moved from {expected_head} "
                f"to {head} during the turn"
            )
        turn = Turn(
            response_id=response.id,
            end_user_id=conversation.end_user_id,
            conversation=conversation,
            channel=channel,
            previous_response_id=expected_head,
            input_text=text,
            output_text=assistant_text(response.data),
        )
        insert_row(turn)
        audit_event_record(
            channel=channel,
            action=AuditAction.RESPONSES_CREATE,
            end_user_id=conversation.end_user_id,
            response_id=response.id,
            conversation_id=(
                response_conversation_id(response.data) or conversation.mka1_conversation_id
            ),
            previous_response_id=response.data.get("previous_response_id"),
            full_response=response,
            api_key_fingerprint=client().key_fingerprint,
            context=context,
        )
    conversation.previous_response_id = response.id
    return turn


def response_conversation_id(data: Mapping[str, Any]) -> str | None:
    conversation = data.get("conversation")
    if isinstance(conversation, dict):
        value = conversation.get("id")
        return str(value) if value else None
    if isinstance(conversation, str):
        return conversation or None
    return None


def assistant_text(data: Mapping[str, Any]) -> str:
    """The assistant's words in a response, as the seed guide extracts them."""
    parts: list[str] = []
    for item in data.get("output") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") != "message" or item.get("role") != "assistant":
            continue
        content = item.get("content")
        if isinstance(content, str):
            parts.append(content)
            continue
        for piece in content or []:
            if isinstance(piece, dict) and isinstance(piece.get("text"), str):
                parts.append(piece["text"])
    if parts:
        return "".join(parts)
    fallback = data.get("output_text")
    return fallback if isinstance(fallback, str) else ""


def feedback_record(*, message: UserMessage, turn: Turn, rating: str | None) -> None:
    """The user rated the reply `turn` produced (`thumbs_up`, `thumbs_down`, or None
    when they took their rating back). A rating is sent to MKA1 as feedback on the
    response, audited as `feedback.create`; taking it back is only stored."""
    if rating is not None:
        mka1 = client()
        try:
            answer = mka1.create_feedback(
                turn.end_user_id, response_id=turn.response_id, rating=rating
            )
        except Mka1Error as exc:
            mka1_failure_record(
                channel=message.channel,
                operation="feedback.create",
                end_user_id=turn.end_user_id,
                exc=exc,
                response_id=turn.response_id,
                conversation_id=turn.conversation.mka1_conversation_id,
                context={"message_id": str(message.pk), "rating": rating},
            )
            raise
        audit_event_record(
            channel=message.channel,
            action=AuditAction.FEEDBACK_CREATE,
            end_user_id=turn.end_user_id,
            response_id=turn.response_id,
            conversation_id=turn.conversation.mka1_conversation_id,
            full_response=answer,
            api_key_fingerprint=mka1.key_fingerprint,
            context={"message_id": str(message.pk), "rating": rating},
        )
    Turn.objects.filter(pk=turn.pk).update(feedback=rating or "")
