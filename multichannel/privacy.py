"""Erasure of one person, retention, and legal holds (README, "Erasure, retention and
legal hold").

An erasure is a durable job (`Erasure`) that moves through its steps in order and saves
its progress after every outside call, so a crash continues where it stopped and
running it twice is harmless:

  begin                nothing of theirs is answered, sent or shown from now on
  mka1_responses       DELETE each stored response        (404: already gone)
  mka1_items           DELETE each item of each conversation (deleting a conversation
                       does not delete its items)
  mka1_conversation    DELETE each conversation
  mka1_files           DELETE each uploaded file
  mka1_transcriptions  DELETE each transcription in their history
  database             our rows: messages, replies, transcripts, media, sign-ins
  notify               the final confirmation, when they asked on a channel
  identity             their channel ids become a keyed hash
  ledger               an `erasure` event, then their events' content is removed
  done

MKA1 is called with the same API key and the person's X-On-Behalf-Of, and every call is
an audit event (a compliance record, never itself erased). Retention removes content
older than CONTENT_RETENTION_DAYS the same way in our database and the ledger; a legal
hold stops both for one person.
"""

import itertools
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from audit.integrity import format_timestamp, ledger_moment
from audit.models import AuditAction, AuditChannel
from audit.selectors import mka1_objects_recorded
from audit.services import audit_content_erase, audit_event_record
from multichannel.channels import privacy_contributions, privacy_of_channel
from multichannel.media import stored_files_delete
from multichannel.mka1 import Mka1Error, Mka1NotFoundError, Mka1Object, client
from multichannel.models import (
    Conversation,
    EndUser,
    Erasure,
    LegalHold,
    Media,
    Turn,
    UserMessage,
)
from multichannel.processing import (
    error_text,
    lease_acquire,
    lease_release,
    retry_delay_for,
)
from multichannel.redaction import redact, redact_value
from multichannel.selectors import UNFINISHED

logger = logging.getLogger(__name__)

Step = Erasure.Step
# The staff group that may erase and hold (migration 0006; create_data_protection_officer).
DATA_PROTECTION_GROUP = "Data protection"
# Items and transcriptions are listed a page at a time and deleted until none are left.
PAGE = 100


class PrivacyError(Exception):
    """A request that cannot be carried out as asked (the message says why)."""


class UnderLegalHoldError(PrivacyError):
    def __init__(self, hold: LegalHold) -> None:
        super().__init__(
            f"{hold.end_user_id} is under a legal hold since "
            f"{hold.added_at:%Y-%m-%d %H:%M} UTC ({hold.reason}); nothing is erased or "
            "removed until it is lifted"
        )
        self.hold = hold


class ErasureStoppedError(PrivacyError):
    """A step could not finish now; the job keeps its place and is resumed later."""

    def __init__(self, erasure: Erasure, reason: str) -> None:
        super().__init__(
            f"erasure {erasure.pk} of {erasure.end_user_id} stopped at "
            f"{erasure.get_step_display().lower()}: {reason}"
        )
        self.erasure = erasure


# --- legal holds -----------------------------------------------------------------------


def legal_hold_active(end_user_id: str) -> LegalHold | None:
    return LegalHold.objects.filter(end_user_id=end_user_id, removed_at__isnull=True).first()


def held_end_user_ids() -> set[str]:
    return set(
        LegalHold.objects.filter(removed_at__isnull=True).values_list("end_user_id", flat=True)
    )


def legal_hold_add(*, end_user: EndUser, reason: str, by: str) -> LegalHold:
    """Hold this person's data (audited as `legal_hold.add`)."""
    reason = _required(reason, "a reason")
    with transaction.atomic():
        EndUser.objects.select_for_update().filter(pk=end_user.pk).first()
        held = legal_hold_active(end_user.pk)
        if held is not None:
            raise PrivacyError(
                f"{end_user.pk} is already under a legal hold since "
                f"{held.added_at:%Y-%m-%d %H:%M} UTC ({held.reason})"
            )
        hold = LegalHold.objects.create(end_user=end_user, reason=reason, added_by=by)
        _operator_record(
            AuditAction.LEGAL_HOLD_ADD,
            end_user_id=end_user.pk,
            context={"legal_hold": hold.pk, "by": by, "reason": reason},
        )
    return hold


def legal_hold_remove(*, end_user: EndUser, reason: str, by: str) -> LegalHold:
    """Lift this person's hold (audited as `legal_hold.remove`). A paused erasure
    carries on at its next run."""
    reason = _required(reason, "a reason")
    with transaction.atomic():
        hold = (
            LegalHold.objects.select_for_update()
            .filter(end_user=end_user, removed_at__isnull=True)
            .first()
        )
        if hold is None:
            raise PrivacyError(f"{end_user.pk} is not under a legal hold")
        hold.removed_at, hold.removed_by, hold.removed_reason = timezone.now(), by, reason
        hold.save(update_fields=["removed_at", "removed_by", "removed_reason"])
        _operator_record(
            AuditAction.LEGAL_HOLD_REMOVE,
            end_user_id=end_user.pk,
            context={"legal_hold": hold.pk, "by": by, "reason": reason},
        )
    return hold


# --- erasure: the request ------------------------------------------------------------


def erasure_request(
    *, end_user: EndUser, reason: str, requested_by: str, notify_channel: str = ""
) -> Erasure:
    """The erasure of this person: a new one, or the one already asked for (a repeated
    request joins it; a finished one is returned as it is). Raises UnderLegalHoldError."""
    reason = _required(reason, "a reason")
    with transaction.atomic():
        # One request at a time per person, and none slips past a hold being added.
        EndUser.objects.select_for_update().filter(pk=end_user.pk).first()
        existing = Erasure.objects.filter(end_user=end_user).order_by("-pk").first()
        if existing is not None:
            return existing
        hold = legal_hold_active(end_user.pk)
        if hold is not None:
            raise UnderLegalHoldError(hold)
        return Erasure.objects.create(
            end_user=end_user,
            reason=reason,
            requested_by=requested_by,
            notify_channel=notify_channel,
        )


def end_users_by_address(address: str) -> tuple[EndUser | None, list[EndUser]]:
    """The live end user a channel address (a WhatsApp number) names, and those
    erased under it (matched by the keyed hash their identity kept)."""
    live: list[EndUser] = []
    erased: list[EndUser] = []
    for _, privacy in privacy_contributions():
        if privacy.lookup is not None:
            found, gone = privacy.lookup(address)
            live += found
            erased += gone
    return (live[0] if live else None), erased


def erasure_scope(end_user: EndUser) -> dict[str, int]:
    """What an erasure of this person would remove, as counts (for a confirmation)."""
    known = mka1_objects_recorded(end_user.pk)
    return {
        "messages": UserMessage.objects.filter(end_user=end_user).count(),
        "turns": Turn.objects.filter(end_user=end_user).count(),
        "media_files": Media.objects.filter(message__end_user=end_user).count(),
        "audit_events_with_content": audit_content_erase(end_user_ids=[end_user.pk], dry_run=True),
        "mka1_responses": len(
            known.responses
            | set(Turn.objects.filter(end_user=end_user).values_list("response_id", flat=True))
        ),
        "mka1_conversations": len(known.conversations),
        "mka1_files": len(known.files),
    }


def erasures_due(now: datetime | None = None) -> list[int]:
    """Unfinished erasures whose next attempt is due (crash recovery)."""
    now = now or timezone.now()
    due = Erasure.objects.filter(finished_at__isnull=True).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    return list(due.filter(attempts__lt=settings.ERASURE_MAX_ATTEMPTS).values_list("pk", flat=True))


# --- erasure: the job ----------------------------------------------------------------


class ErasureBusyError(PrivacyError):
    """A turn of this person is in flight, or the erasure is running elsewhere."""


def erasure_run(erasure: Erasure, *, lease_wait: float = 0.0) -> Erasure:
    """Run the erasure's remaining steps in order, saving progress as it goes. Raises
    UnderLegalHoldError (a hold placed since it began pauses it), ErasureBusyError (a
    turn still in flight after `lease_wait` seconds, or another run of it going on) or
    ErasureStoppedError (an outside call kept failing: it resumes from the same place
    when run again).

    It holds the person's processing lease throughout: a turn in flight finishes
    first, no new one starts, and two runs of one erasure never overlap."""
    if erasure.finished:
        return erasure
    owner = f"erasure-{erasure.pk}-{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + lease_wait
    while not lease_acquire(erasure.end_user_id, owner):
        if time.monotonic() >= deadline:
            raise ErasureBusyError(
                f"erasure {erasure.pk}: a turn of {erasure.end_user_id} is in flight, or the "
                "erasure is running elsewhere; it is tried again soon"
            )
        time.sleep(0.2)
    erasure.lease_owner = owner  # renewed by each step and each call
    try:
        while not erasure.finished:
            _step_run(erasure)
    finally:
        lease_release(erasure.end_user_id, owner)
    return erasure


def _step_run(erasure: Erasure) -> None:
    hold = legal_hold_active(erasure.end_user_id)
    if hold is not None:
        raise UnderLegalHoldError(hold)
    step = Step(erasure.step)
    try:
        _lease_renew(erasure)
        _STEPS[step](erasure)
    except Mka1Error as exc:
        _stopped(erasure, exc)
        raise ErasureStoppedError(erasure, error_text(exc)) from exc
    except ErasureBusyError:
        raise
    except Exception as exc:
        _stopped(erasure, exc)
        raise
    erasure.step = _NEXT[step]
    erasure.attempts, erasure.next_attempt_at = 0, None
    if erasure.step == Step.DONE:
        erasure.finished_at = timezone.now()
    erasure.save(update_fields=["step", "attempts", "next_attempt_at", "finished_at"])
    logger.info("erasure %s: %s done", erasure.pk, step.label.lower())


def _lease_renew(erasure: Erasure) -> None:
    if not lease_acquire(erasure.end_user_id, erasure.lease_owner):
        raise ErasureBusyError(f"erasure {erasure.pk}: lost the lease to another run")


def _stopped(erasure: Erasure, exc: Exception) -> None:
    erasure.attempts += 1
    erasure.error = error_text(exc)
    delay = retry_delay_for(erasure.attempts, exc)
    erasure.next_attempt_at = timezone.now() + timedelta(seconds=delay)
    erasure.save(update_fields=["attempts", "error", "next_attempt_at"])
    log = logger.error if erasure.attempts >= settings.ERASURE_MAX_ATTEMPTS else logger.warning
    log(
        "erasure %s of %s stopped at %s (attempt %d of %d): %s",
        erasure.pk,
        erasure.end_user_id,
        erasure.step,
        erasure.attempts,
        settings.ERASURE_MAX_ATTEMPTS,
        erasure.error,
    )


def _begin(erasure: Erasure) -> None:
    # From now on nothing of theirs is answered, sent or shown; the lease this run
    # holds let any turn in flight finish first.
    EndUser.objects.filter(pk=erasure.end_user_id, erased_at__isnull=True).update(
        erased_at=timezone.now()
    )


def _mka1_responses(erasure: Erasure) -> None:
    user = erasure.end_user_id
    done = _done(erasure, "responses")
    ids = set(Turn.objects.filter(end_user_id=user).values_list("response_id", flat=True))
    ids |= mka1_objects_recorded(user).responses
    for response_id in sorted(ids - set(done)):
        _mka1_call(
            erasure,
            "responses.delete",
            partial(client().delete_response, user, response_id),
            response_id=response_id,
        )
        _progress(erasure, "responses", response_id)


def _conversations(erasure: Erasure) -> list[str]:
    user = erasure.end_user_id
    ids = set(
        Conversation.objects.filter(end_user_id=user).values_list("mka1_conversation_id", flat=True)
    )
    ids |= mka1_objects_recorded(user).conversations
    ids |= set(erasure.removed.get("mka1_conversations_seen", []))
    if sorted(ids) != erasure.removed.get("mka1_conversations_seen"):
        # Kept, so later steps still know them once our rows are gone.
        erasure.removed["mka1_conversations_seen"] = sorted(ids)
        erasure.save(update_fields=["removed"])
    return sorted(ids)


def _mka1_items(erasure: Erasure) -> None:
    user = erasure.end_user_id
    for conversation_id in _conversations(erasure):
        if conversation_id in _done(erasure, "conversations_emptied"):
            continue
        _listed_delete(
            erasure,
            "conversations.items",
            partial(client().list_conversation_items, user, conversation_id, limit=PAGE),
            partial(client().delete_conversation_item, user, conversation_id),
            id_key="item_id",
            deleted=lambda _: _count(erasure, "mka1_items"),
            conversation_id=conversation_id,
        )
        _progress(erasure, "conversations_emptied", conversation_id)


def _mka1_conversation(erasure: Erasure) -> None:
    user = erasure.end_user_id
    for conversation_id in _conversations(erasure):
        if conversation_id in _done(erasure, "conversations"):
            continue
        _mka1_call(
            erasure,
            "conversations.delete",
            partial(client().delete_conversation, user, conversation_id),
            conversation_id=conversation_id,
        )
        _progress(erasure, "conversations", conversation_id)


def _mka1_files(erasure: Erasure) -> None:
    user = erasure.end_user_id
    ids = set(
        Media.objects.filter(message__end_user_id=user)
        .exclude(mka1_file_id="")
        .values_list("mka1_file_id", flat=True)
    )
    ids |= mka1_objects_recorded(user).files
    for file_id in sorted(ids - set(_done(erasure, "files"))):
        _mka1_call(
            erasure,
            "files.delete",
            partial(client().delete_file, user, file_id),
            context={"file_id": file_id},
        )
        _progress(erasure, "files", file_id)


def _mka1_transcriptions(erasure: Erasure) -> None:
    user = erasure.end_user_id
    _listed_delete(
        erasure,
        "speech.transcriptions",
        partial(client().list_transcriptions, user, limit=PAGE),
        partial(client().delete_transcription, user),
        id_key="transcription_id",
        deleted=partial(_progress, erasure, "transcriptions"),
    )


def _listed_delete(
    erasure: Erasure,
    kind: str,
    listing: Callable[[], Mka1Object],
    delete: Callable[[str], Mka1Object],
    *,
    id_key: str,
    deleted: Callable[[str], None],
    conversation_id: str | None = None,
) -> None:
    """Delete everything of a kind MKA1 lists (`<kind>.list`, `<kind>.delete`), a page
    at a time, until the listing is empty: MKA1 has no "delete all of this person"."""
    tried: set[str] = set()
    while True:
        page = _mka1_call(
            erasure, f"{kind}.list", listing, conversation_id=conversation_id, listing=True
        )
        ids = [item["id"] for item in _listed(page) if item["id"] not in tried]
        if not ids:
            return  # none left (or the collection is gone)
        for object_id in ids:
            tried.add(object_id)
            _mka1_call(
                erasure,
                f"{kind}.delete",
                partial(delete, object_id),
                conversation_id=conversation_id,
                context={id_key: object_id},
            )
            deleted(object_id)


def _database(erasure: Erasure) -> None:
    removed = end_user_rows_forget(erasure.end_user_id)
    counts = erasure.removed.setdefault("database", {})
    for name, count in removed.items():
        counts[name] = counts.get(name, 0) + count
    erasure.save(update_fields=["removed"])


def _notify(erasure: Erasure) -> None:
    if not erasure.notify_channel or erasure.removed.get("notified") is not None:
        return
    privacy = privacy_of_channel(erasure.notify_channel)
    sent = bool(privacy and privacy.notify_erased and privacy.notify_erased(erasure.end_user))
    erasure.removed["notified"] = sent
    erasure.save(update_fields=["removed"])


def _identity(erasure: Erasure) -> None:
    end_user = erasure.end_user
    hashed = 0
    for _, privacy in privacy_contributions():
        if privacy.pseudonymise is not None:
            hashed += privacy.pseudonymise(end_user)
    erasure.removed["identities_hashed"] = erasure.removed.get("identities_hashed", 0) + hashed
    erasure.save(update_fields=["removed"])
    # Anything that reached them before their ids were hashed goes too.
    _database(erasure)


def _ledger(erasure: Erasure) -> None:
    user = erasure.end_user_id
    if erasure.audit_sequence is None:
        with transaction.atomic():
            event = _operator_record(
                AuditAction.ERASURE,
                end_user_id=user,
                context=_erasure_context(erasure),
            )
            erasure.audit_sequence = event.sequence
            erasure.save(update_fields=["audit_sequence"])
    erased = audit_content_erase(before_sequence=erasure.audit_sequence, end_user_ids=[user])
    erasure.removed["ledger_events"] = erasure.removed.get("ledger_events", 0) + erased
    erasure.save(update_fields=["removed"])


def _erasure_context(erasure: Erasure) -> dict[str, Any]:
    removed = erasure.removed
    pending = audit_content_erase(end_user_ids=[erasure.end_user_id], dry_run=True)
    return {
        "erasure": erasure.pk,
        "requested_by": erasure.requested_by,
        "reason": erasure.reason,
        "requested_at": format_timestamp(erasure.requested_at),
        "removed": {
            "mka1": {
                "responses": removed.get("responses", []),
                "conversations": removed.get("conversations", []),
                "conversation_items": removed.get("mka1_items", 0),
                "files": removed.get("files", []),
                "transcriptions": removed.get("transcriptions", []),
            },
            "database": removed.get("database", {}),
            "identities_hashed": removed.get("identities_hashed", 0),
            "ledger_events": pending,
        },
        "notified": removed.get("notified"),
    }


_STEPS: dict[Step, Callable[[Erasure], None]] = {
    Step.BEGIN: _begin,
    Step.MKA1_RESPONSES: _mka1_responses,
    Step.MKA1_ITEMS: _mka1_items,
    Step.MKA1_CONVERSATION: _mka1_conversation,
    Step.MKA1_FILES: _mka1_files,
    Step.MKA1_TRANSCRIPTIONS: _mka1_transcriptions,
    Step.DATABASE: _database,
    Step.NOTIFY: _notify,
    Step.IDENTITY: _identity,
    Step.LEDGER: _ledger,
}
_ORDER = [*_STEPS, Step.DONE]
_NEXT = dict(itertools.pairwise(_ORDER))


# --- erasure: MKA1 calls, each audited -----------------------------------------------


def _mka1_call(
    erasure: Erasure,
    operation: str,
    call: Callable[[], Mka1Object],
    *,
    response_id: str | None = None,
    conversation_id: str | None = None,
    context: dict[str, Any] | None = None,
    listing: bool = False,
) -> Mka1Object | None:
    """One MKA1 call of the erasure, audited (channel `operator`). A 404 means the
    object is already gone: recorded, and not an error. A list's answer holds the
    person's content, so its event records only the ids listed."""
    _lease_renew(erasure)  # a long erasure keeps its lease
    details = {"erasure": erasure.pk, **(context or {})}
    try:
        answer = call()
    except Mka1NotFoundError as exc:
        _operator_record(
            AuditAction(operation),
            end_user_id=erasure.end_user_id,
            response_id=response_id,
            conversation_id=conversation_id,
            full_response=redact_value(exc.body) if isinstance(exc.body, dict) else None,
            context={**details, "status": 404, "already_gone": True},
        )
        return None
    except Mka1Error as exc:
        _operator_record(
            AuditAction.failed(operation),
            end_user_id=erasure.end_user_id,
            response_id=response_id,
            conversation_id=conversation_id,
            full_response=redact_value(exc.body) if isinstance(exc.body, dict) else None,
            context={
                **details,
                "status": exc.status,
                "error": redact(str(exc)),
                "transient": exc.transient,
                "attempt": erasure.attempts + 1,
            },
        )
        raise
    if listing:
        listed = [item["id"] for item in _listed(answer)]
        details |= {"listed": listed, "has_more": bool(answer.data.get("has_more"))}
    _operator_record(
        AuditAction(operation),
        end_user_id=erasure.end_user_id,
        response_id=response_id,
        conversation_id=conversation_id,
        full_response=None if listing else answer,
        context=details,
    )
    return answer


def _listed(page: Mka1Object | None) -> list[dict[str, Any]]:
    if page is None:
        return []
    data = page.data.get("data")
    if not isinstance(data, list):
        return []
    return [item for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)]


def _operator_record(
    action: AuditAction, *, end_user_id: str, full_response: Any = None, **fields: Any
) -> Any:
    return audit_event_record(
        channel=AuditChannel.OPERATOR,
        action=action,
        end_user_id=end_user_id,
        full_response=full_response,
        api_key_fingerprint=client().key_fingerprint,
        **fields,
    )


def _done(erasure: Erasure, name: str) -> list[str]:
    done: list[str] = erasure.removed.get(name, [])
    return done


def _progress(erasure: Erasure, name: str, value: str) -> None:
    done = erasure.removed.setdefault(name, [])
    if value not in done:
        done.append(value)
    erasure.save(update_fields=["removed"])


def _count(erasure: Erasure, name: str) -> None:
    erasure.removed[name] = erasure.removed.get(name, 0) + 1
    erasure.save(update_fields=["removed"])


# --- our rows ------------------------------------------------------------------------


def end_user_rows_forget(end_user_id: str) -> dict[str, int]:
    """Delete what we hold of this person (the channels' rows first, then the core's):
    messages, replies, transcripts, stored media, their conversation and turns. The
    EndUser row stays: its opaque id is what the ledger names. Harmless to repeat."""
    end_user = EndUser.objects.get(pk=end_user_id)
    removed: dict[str, int] = {}
    with transaction.atomic():
        for name, privacy in privacy_contributions():
            for what, count in privacy.forget(end_user).items():
                removed[f"{name}_{what}"] = count
        media = Media.objects.filter(message__end_user_id=end_user_id)
        files = _kept_files(media)
        removed["media"] = media.delete()[0]
        messages = UserMessage.objects.filter(end_user_id=end_user_id)
        removed["messages"] = messages.delete()[0]
        removed["turns"] = Turn.objects.filter(end_user_id=end_user_id).delete()[0]
        removed["conversations"] = Conversation.objects.filter(end_user_id=end_user_id).delete()[0]
        transaction.on_commit(lambda: stored_files_delete(files))
    return removed


def _kept_files(media: QuerySet[Media]) -> dict[str, str]:
    """The stored files of these media rows: SHA-256 -> stored name."""
    return dict(media.exclude(stored_name="").values_list("sha256", "stored_name"))


def message_of_erased_end_user(message: UserMessage) -> None:
    """A message that reached a person whose data is being or was erased: never
    answered or sent; once the erasure is done it is removed at once."""
    message.state = UserMessage.State.FAILED
    message.error = "not answered: this person's data was erased"
    message.save(update_fields=["state", "error", "updated_at"])
    if Erasure.objects.filter(end_user_id=message.end_user_id, finished_at__isnull=False).exists():
        end_user_rows_forget(message.end_user_id)


# --- retention -------------------------------------------------------------------------


def retention_cutoff(days: int, now: datetime | None = None) -> datetime:
    if days < settings.MIN_RETENTION_DAYS:
        raise PrivacyError(
            f"content must be kept at least MIN_RETENTION_DAYS ({settings.MIN_RETENTION_DAYS} "
            f"days); {days} is fewer"
        )
    # Compared with the ledger's timestamps: in its own resolution.
    return ledger_moment((now or timezone.now()) - timedelta(days=days))


def retention_run(*, days: int | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Remove content older than `days` (CONTENT_RETENTION_DAYS) from the ledger and
    our rows, except of people under a legal hold. One `retention` event records the
    run, its cutoff and what it removes, before anything is removed."""
    days = days if days is not None else settings.CONTENT_RETENTION_DAYS
    if not days:
        raise PrivacyError("CONTENT_RETENTION_DAYS is not set: content is kept")
    cutoff = retention_cutoff(days, now)
    held = held_end_user_ids()
    with transaction.atomic():
        ledger = audit_content_erase(older_than=cutoff, keep_end_user_ids=held, dry_run=True)
        event = _operator_record(
            AuditAction.RETENTION,
            end_user_id="",
            context={
                "cutoff": format_timestamp(cutoff),
                "days": days,
                "held_end_users": len(held),
                "ledger_events": ledger,
            },
        )
    removed: dict[str, Any] = {
        "cutoff": format_timestamp(cutoff),
        "audit_sequence": event.sequence,
        "ledger_events": audit_content_erase(
            before_sequence=event.sequence, older_than=cutoff, keep_end_user_ids=held
        ),
    }
    with transaction.atomic():
        removed |= _core_retain(cutoff, held)
        for name, privacy in privacy_contributions():
            if privacy.retain is not None:
                for what, count in privacy.retain(cutoff, held).items():
                    removed[f"{name}_{what}"] = count
    logger.info("retention: %s", removed)
    return removed


def _core_retain(cutoff: datetime, held: set[str]) -> dict[str, int]:
    finished = UserMessage.objects.exclude(state__in=UNFINISHED).exclude(end_user_id__in=held)
    old = finished.filter(sent_at__lt=cutoff)
    blank = {"text": "", "reply_text": "", "error": ""}
    messages = old.exclude(**blank).update(**blank)
    turns = (
        Turn.objects.filter(created_at__lt=cutoff)
        .exclude(end_user_id__in=held)
        .exclude(input_text="", output_text="")
        .update(input_text="", output_text="")
    )
    media = Media.objects.filter(message__in=old).exclude(
        stored_name="", transcript="", caption="", filename=""
    )
    files = _kept_files(media)
    media_count = media.update(stored_name="", transcript="", caption="", filename="", sha256="")
    transaction.on_commit(lambda: stored_files_delete(files))
    return {"messages": messages, "turns": turns, "media": media_count}


# --- helpers -----------------------------------------------------------------------------


def _required(value: str, what: str) -> str:
    value = (value or "").strip()
    if not value:
        raise PrivacyError(f"{what} is required")
    return value
