"""Erasing personal content from the ledger while every row, sequence, digest and hash
stays, and the ledger still verifies.

An erased event keeps its row, its content digest and its place in the hash chain and
the Merkle tree; only its content goes: its context becomes `{}` and its body reference
null (bodies no other event needs are deleted). The database's triggers allow exactly
that change and nothing else (audit/triggers.py). Such an event verifies "digest-only"
(its digest can no longer be recomputed, so the stored one is taken), but only when the
ledger itself says why its content is gone:

- an `erasure` event of the same end user with a higher sequence (a person's request), or
- a `retention` event with a higher sequence whose `cutoff` is after the event's time.

An event whose content is missing without either fails verification as changed. The
rule needs nothing but the ledger, so it holds for the database, an export and an
auditor's standalone check alike."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Events that record compliance itself: never erased (they hold no personal content,
# and they are what makes the others' erasure provable).
COMPLIANCE_ACTIONS = frozenset(
    {
        "erasure",
        "retention",
        "legal_hold.add",
        "legal_hold.remove",
        "responses.delete",
        "responses.delete.failed",
        "conversations.items.list",
        "conversations.items.list.failed",
        "conversations.items.delete",
        "conversations.items.delete.failed",
        "conversations.delete",
        "conversations.delete.failed",
        "files.delete",
        "files.delete.failed",
        "speech.transcriptions.list",
        "speech.transcriptions.list.failed",
        "speech.transcriptions.delete",
        "speech.transcriptions.delete.failed",
    }
)
ERASED_CONTEXT: dict[str, Any] = {}


def erased_shape(context: Any, full_response: str | None) -> bool:
    """Whether an event's content is gone: no context left and no body."""
    return context in (None, {}) and full_response in (None, "null")


@dataclass
class Coverage:
    """The erasure and retention events of a ledger: which events may be digest-only."""

    # end user id -> the highest sequence of an erasure event for them
    erasures: dict[str, int] = field(default_factory=dict)
    # (sequence, cutoff as exported: UTC, milliseconds, Z) of each retention run
    retentions: list[tuple[int, str]] = field(default_factory=list)

    def note(self, *, sequence: int, action: str, end_user_id: str, context: Any) -> None:
        """Take in an event: an erasure or a retention run widens the coverage."""
        if action == "erasure" and end_user_id:
            self.erasures[end_user_id] = max(sequence, self.erasures.get(end_user_id, 0))
        elif action == "retention" and isinstance(context, dict):
            cutoff = context.get("cutoff")
            if isinstance(cutoff, str):
                self.retentions.append((sequence, cutoff))

    def covering(self, *, sequence: int, end_user_id: str, timestamp: str) -> int | None:
        """The erasure or retention event that removed this event's content, if any."""
        erasure = self.erasures.get(end_user_id)
        if erasure is not None and erasure > sequence:
            return erasure
        for retention, cutoff in self.retentions:
            if retention > sequence and timestamp < cutoff:
                return retention
        return None

    @classmethod
    def of(cls, events: Iterable[tuple[int, str, str, Any]]) -> "Coverage":
        """From (sequence, action, end_user_id, context) of erasure/retention events."""
        coverage = cls()
        for sequence, action, end_user_id, context in events:
            coverage.note(
                sequence=sequence, action=action, end_user_id=end_user_id, context=context
            )
        return coverage


def database_coverage() -> Coverage:
    from audit.models import AuditEvent

    rows = AuditEvent.objects.filter(action__in=("erasure", "retention")).values_list(
        "sequence", "action", "end_user_id", "context"
    )
    return Coverage.of(rows.order_by("sequence").iterator())
