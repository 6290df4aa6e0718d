"""The mappings both channels share: who the end user is, and where their thread stands."""

import secrets

from django.db import models


def new_end_user_id() -> str:
    # Opaque and stable: this is the X-On-Behalf-Of value, so it must never be a
    # phone number or anything else that identifies the person to MKA1.
    return f"user_{secrets.token_hex(12)}"


class Channel(models.TextChoices):
    WHATSAPP = "whatsapp", "WhatsApp"
    WEBAPP = "webapp", "Web app"


class EndUser(models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_end_user_id, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.id


class Conversation(models.Model):
    """One MKA1 conversation per end user, created once and reused on both channels."""

    end_user = models.OneToOneField(EndUser, on_delete=models.PROTECT, related_name="conversation")
    mka1_conversation_id = models.CharField(max_length=128, unique=True)
    # The head of the response chain; advanced only once the next response is stored.
    previous_response_id = models.CharField(max_length=128, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.mka1_conversation_id


class Turn(models.Model):
    """One user message and the stored MKA1 response that answered it."""

    response_id = models.CharField(max_length=128, unique=True)
    end_user = models.ForeignKey(EndUser, on_delete=models.PROTECT, related_name="turns")
    conversation = models.ForeignKey(Conversation, on_delete=models.PROTECT, related_name="turns")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    previous_response_id = models.CharField(max_length=128, null=True, blank=True)
    input_text = models.TextField()
    output_text = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # The chain never forks: no two turns continue the same response.
            models.UniqueConstraint(
                fields=["conversation", "previous_response_id"], name="turn_chain_linear"
            ),
            # ...and only one turn starts it (NULLs are distinct in a unique index).
            models.UniqueConstraint(
                fields=["conversation"],
                condition=models.Q(previous_response_id__isnull=True),
                name="turn_chain_single_root",
            ),
        ]

    def __str__(self) -> str:
        return self.response_id
