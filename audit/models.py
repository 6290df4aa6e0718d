"""The audit store: an append-only ledger of every interaction on both channels.

Ids are stored as values, never as foreign keys, so no deletion anywhere can cascade
into the ledger. Rows are written only by `audit.services.audit_event_record`.
"""

from typing import Any, NoReturn

from django.db import models


class AppendOnlyError(Exception):
    """Raised on any attempt to change or remove an audit event."""


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events cannot be updated")

    def delete(self) -> NoReturn:
        raise AppendOnlyError("audit events cannot be deleted")

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events cannot be updated")

    def bulk_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events are written one at a time by audit_event_record")

    def update_or_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events cannot be updated")


GENESIS_HASH = "0" * 64


class AuditEvent(models.Model):
    # Position in the hash chain: 1, 2, 3, ... with no gaps, assigned under a lock.
    sequence = models.BigIntegerField(unique=True)
    timestamp = models.DateTimeField(db_index=True)
    channel = models.CharField(max_length=32)
    action = models.CharField(max_length=64)
    # Exactly the X-On-Behalf-Of value sent to MKA1 for this call.
    end_user_id = models.CharField(max_length=128, db_index=True)
    response_id = models.CharField(max_length=128, null=True, blank=True, db_index=True)
    conversation_id = models.CharField(max_length=128, null=True, blank=True, db_index=True)
    previous_response_id = models.CharField(max_length=128, null=True, blank=True)
    # JSON text, not a JSON column: PostgreSQL's jsonb would reorder the keys, and the
    # export must carry the MKA1 object exactly as it came off the wire.
    full_response = models.TextField(default="null")
    # sha256 of the MKA1 API key, shortened: proves "same API user" without the key.
    api_key_fingerprint = models.CharField(max_length=64, blank=True)
    # Extra context, such as the WhatsApp message id that caused the call.
    context = models.JSONField(default=dict, blank=True)
    # Tamper evidence: a digest of this event's content, and a hash chaining it to the
    # previous event. The chain covers the digest, not the content, so a future audited
    # erasure can blank personal data and still leave the chain verifiable.
    content_digest = models.CharField(max_length=64)
    previous_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["sequence"]
        # Django's internal manager (used for related lookups and some deletes) must
        # carry the append-only guard too.
        base_manager_name = "objects"
        indexes = [
            models.Index(fields=["end_user_id", "timestamp"], name="audit_user_time"),
            models.Index(fields=["channel", "action"], name="audit_channel_action"),
        ]

    def __str__(self) -> str:
        return f"{self.timestamp:%Y-%m-%d %H:%M:%S} {self.channel} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding or not getattr(self, "_recording", False):
            raise AppendOnlyError("audit events are written only by audit_event_record")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit events cannot be deleted")


class AuditChainHead(models.Model):
    """The last link of the chain: one row, locked by every writer, so two workers
    recording at once can never fork the chain or reuse a sequence number."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    sequence = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)

    def __str__(self) -> str:
        return f"audit chain head at {self.sequence}"
