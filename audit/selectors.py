import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from audit.models import AuditAction, AuditChainHead, AuditEvent


@dataclass(frozen=True)
class AuditFilter:
    since: datetime | None = None
    until: datetime | None = None
    end_user_id: str | None = None
    conversation_id: str | None = None
    response_id: str | None = None
    channel: str | None = None
    action: str | None = None


def audit_events_filter(criteria: AuditFilter) -> QuerySet[AuditEvent]:
    """Events matching every given criterion, in chain order; `until` is exclusive."""
    events = AuditEvent.objects.all()
    if criteria.since is not None:
        events = events.filter(timestamp__gte=criteria.since)
    if criteria.until is not None:
        events = events.filter(timestamp__lt=criteria.until)
    if criteria.end_user_id:
        events = events.filter(end_user_id=criteria.end_user_id)
    if criteria.conversation_id:
        events = events.filter(conversation_id=criteria.conversation_id)
    if criteria.response_id:
        events = events.filter(response_id=criteria.response_id)
    if criteria.channel:
        events = events.filter(channel=criteria.channel)
    if criteria.action:
        events = events.filter(action=criteria.action)
    return events.order_by("sequence")


def chain_links(*, after: int, upto: int, chunk: int = 5000) -> Iterator[tuple[int, str, str, str]]:
    """(sequence, content_digest, previous_hash, hash) of events after..upto, in chain
    order: what the Merkle tree and a link-by-link check need, without the bodies."""
    rows = (
        AuditEvent.objects.filter(sequence__gt=after, sequence__lte=upto)
        .order_by("sequence")
        .values_list("sequence", "content_digest", "previous_hash", "hash")
    )
    yield from rows.iterator(chunk_size=chunk)


def event_hash(sequence: int) -> str | None:
    return AuditEvent.objects.filter(sequence=sequence).values_list("hash", flat=True).first()


def chain_head_size() -> int:
    """How many events the ledger holds, by its chain head."""
    size = AuditChainHead.objects.filter(pk=1).values_list("sequence", flat=True).first()
    return int(size or 0)


@dataclass(frozen=True)
class Mka1Objects:
    """What the ledger saw MKA1 make for one person."""

    responses: frozenset[str]
    conversations: frozenset[str]
    files: frozenset[str]


def mka1_objects_recorded(end_user_id: str) -> Mka1Objects:
    """The stored responses, conversations and uploaded files of this person that the
    ledger recorded being made (read before their content is erased): an erasure
    deletes these at MKA1 even when our own tables lost track of one."""
    events = AuditEvent.objects.filter(end_user_id=end_user_id)
    responses = events.filter(action=AuditAction.RESPONSES_CREATE, response_id__isnull=False)
    conversations = events.filter(
        action=AuditAction.CONVERSATIONS_CREATE, conversation_id__isnull=False
    )
    files = set()
    uploads = events.filter(action=AuditAction.FILES_CREATE, body__isnull=False)
    for text in uploads.values_list("body__text", flat=True):
        try:
            file_id = json.loads(text).get("id") if text else None
        except (ValueError, AttributeError):
            file_id = None
        if isinstance(file_id, str) and file_id:
            files.add(file_id)
    return Mka1Objects(
        responses=frozenset(filter(None, responses.values_list("response_id", flat=True))),
        conversations=frozenset(
            filter(None, conversations.values_list("conversation_id", flat=True))
        ),
        files=frozenset(files),
    )
