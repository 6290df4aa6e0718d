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
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "WhatsApp identity"
        verbose_name_plural = "WhatsApp identities"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(wa_id__isnull=False) | models.Q(bsuid__isnull=False),
                name="whatsapp_identity_has_an_id",
            ),
        ]

    def __str__(self) -> str:
        return self.wa_id or self.bsuid or "?"
