from django.db import models

from multichannel.models import EndUser


class WhatsAppIdentity(models.Model):
    """How WhatsApp names an end user: the phone-based `wa_id` and/or the
    business-scoped user id (BSUID) that newer webhook payloads carry instead."""

    end_user = models.OneToOneField(
        EndUser, on_delete=models.PROTECT, related_name="whatsapp_identity"
    )
    wa_id = models.CharField(max_length=32, unique=True, null=True, blank=True)
    bsuid = models.CharField(max_length=128, unique=True, null=True, blank=True)
    # Set while the user has asked for no messages (STOP, or Meta's user_preferences).
    opted_out_at = models.DateTimeField(null=True, blank=True)
    # When the user last sent DELETE MY DATA: a YES soon after confirms it.
    erasure_asked_at = models.DateTimeField(null=True, blank=True)
    # After an erasure, all that is left: a keyed hash of the number (or of the
    # business-scoped id), so a repeat request can be matched and a returning number
    # is a new end user (whatsapp.services.erased_id_hash).
    erased_hash = models.CharField(max_length=64, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "WhatsApp identity"
        verbose_name_plural = "WhatsApp identities"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(wa_id__isnull=False)
                | models.Q(bsuid__isnull=False)
                | ~models.Q(erased_hash=""),
                name="whatsapp_identity_has_an_id",
            ),
        ]

    def __str__(self) -> str:
        return self.wa_id or self.bsuid or ("erased" if self.erased_hash else "?")


class WebhookDelivery(models.Model):
    """A verified webhook POST from Meta, kept exactly as received.

    The request stores only this row and queues its fan-out; the worker then stores the
    messages and applies the statuses it carries (`whatsapp.services.delivery_fan_out`)
    and sets `processed_at`. A delivery still without it is work left to do, which
    recovery queues again if its task was lost."""

    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    object = models.CharField(max_length=64, blank=True)
    raw_body = models.TextField()
    message_count = models.PositiveIntegerField(default=0)
    status_count = models.PositiveIntegerField(default=0)
    processed_at = models.DateTimeField(null=True, blank=True)
    # Set when the fan-out failed for a reason of this delivery's own (not the database
    # being away): it is set aside, processed, so that it holds up no later delivery.
    fan_out_error = models.TextField(blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        indexes = [
            # Recovery's lookup of deliveries not fanned out yet: a handful at most.
            models.Index(
                fields=["received_at"],
                condition=models.Q(processed_at__isnull=True),
                name="whatsapp_delivery_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"webhook {self.pk} ({self.object or 'unknown'})"


class InboundMessage(models.Model):
    """A message a user sent to the business number. The WhatsApp message id is unique,
    so a redelivered webhook stores nothing twice."""

    wamid = models.CharField(max_length=255, unique=True)
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.PROTECT, related_name="messages")
    identity = models.ForeignKey(
        WhatsAppIdentity, on_delete=models.PROTECT, related_name="messages"
    )
    user_message = models.OneToOneField(
        "multichannel.UserMessage", on_delete=models.PROTECT, related_name="whatsapp_inbound"
    )
    type = models.CharField(max_length=32)
    phone_number_id = models.CharField(max_length=64, blank=True)
    sent_at = models.DateTimeField()
    raw = models.JSONField()
    read_marked = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # The user's last message opens WhatsApp's 24-hour customer-service window.
            models.Index(fields=["identity", "sent_at"], name="inbound_identity_sent"),
        ]

    def __str__(self) -> str:
        return self.wamid


class OutboundMessage(models.Model):
    """A reply sent through the Graph API (one row per part of a long reply)."""

    class Status(models.TextChoices):
        ACCEPTED = "accepted", "Accepted by the Graph API"
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        READ = "read", "Read"
        FAILED = "failed", "Failed"

    user_message = models.ForeignKey(
        "multichannel.UserMessage", on_delete=models.PROTECT, related_name="whatsapp_outbound"
    )
    part = models.PositiveSmallIntegerField(default=0)
    wamid = models.CharField(max_length=255, unique=True, null=True, blank=True)
    recipient = models.CharField(max_length=128)
    text = models.TextField()
    # A template is sent instead of the reply outside the 24-hour window.
    template = models.CharField(max_length=128, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACCEPTED)
    status_at = models.DateTimeField(null=True, blank=True)
    errors = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user_message", "part"], name="outbound_one_per_part")
        ]

    def __str__(self) -> str:
        return self.wamid or f"outbound {self.pk}"
