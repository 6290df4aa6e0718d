"""State of the local MKA1 stand-in. Kept in the database so the web process and the
queue worker see the same conversations and stored responses."""

import json
from typing import Any

from django.db import models


class SandboxConversation(models.Model):
    id = models.CharField(primary_key=True, max_length=64)
    # Who may see it: the API key's fingerprint and the X-On-Behalf-Of value.
    owner_key = models.CharField(max_length=64)
    owner_user = models.CharField(max_length=128)
    body = models.JSONField()
    # Set while a response is being generated: MKA1 refuses a second turn meanwhile.
    locked_until = models.DateTimeField(null=True, blank=True)
    # Deleting a conversation at MKA1 does not delete its items: the row stays (and so
    # do its items, now unreachable through the API) with this set.
    deleted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.id


class SandboxItem(models.Model):
    item_id = models.CharField(max_length=64, unique=True)
    conversation = models.ForeignKey(
        SandboxConversation, on_delete=models.CASCADE, related_name="items"
    )
    response_id = models.CharField(max_length=64, null=True, blank=True)
    body = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.item_id


class SandboxResponse(models.Model):
    id = models.CharField(primary_key=True, max_length=64)
    owner_key = models.CharField(max_length=64)
    owner_user = models.CharField(max_length=128)
    conversation_id = models.CharField(max_length=64, null=True, blank=True)
    # The JSON text exactly as served, so GET returns the same bytes as the create.
    raw = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.id


class SandboxFault(models.Model):
    """A planned misbehaviour: the next `remaining` calls matching `endpoint` answer
    with `status` (or hang for `delay_ms` first). Used by fault tests and benchmarks."""

    endpoint = models.CharField(max_length=64, help_text="e.g. responses.create, or * for all")
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    delay_ms = models.PositiveIntegerField(default=0)
    # A download answers with its full Content-Length but only part of the body.
    truncate = models.BooleanField(default=False)
    # JSON text, not a JSON column: the answer keeps the key order it was given.
    body = models.TextField(null=True, blank=True)
    headers = models.JSONField(default=dict, blank=True)
    remaining = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.endpoint} -> {self.status} x{self.remaining}"

    @property
    def payload(self) -> Any:
        return None if self.body is None else json.loads(self.body)


class SandboxGraphMessage(models.Model):
    """What the business sent through the Graph API stand-in: replies, templates, read
    marks and typing indicators."""

    phone_number_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=16)  # "text", "template", "read" or "typing"
    recipient = models.CharField(max_length=128, blank=True)
    wamid = models.CharField(max_length=255, blank=True)
    body = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} to {self.recipient or '-'}"


class SandboxMedia(models.Model):
    """Media held by the Graph API stand-in: what a WhatsApp user sent, uploaded the way
    a business uploads (POST /{phone-number-id}/media), then served by id and URL."""

    id = models.CharField(primary_key=True, max_length=32)
    mime_type = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)  # hex, as the media endpoint reports it
    file_size = models.PositiveBigIntegerField()
    filename = models.CharField(max_length=255, blank=True)
    data = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.id} ({self.mime_type}, {self.file_size} bytes)"


class SandboxFile(models.Model):
    """A file uploaded to the MKA1 stand-in (POST /files), owned like a response."""

    id = models.CharField(primary_key=True, max_length=64)
    owner_key = models.CharField(max_length=64)
    owner_user = models.CharField(max_length=128)
    filename = models.CharField(max_length=255)
    purpose = models.CharField(max_length=32)
    mime_type = models.CharField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    data = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.id


class SandboxTranscription(models.Model):
    """One speech-to-text call, kept as MKA1 keeps its transcription history."""

    id = models.CharField(primary_key=True, max_length=64)
    owner_key = models.CharField(max_length=64)
    owner_user = models.CharField(max_length=128)
    text = models.TextField()
    language = models.CharField(max_length=16)
    model = models.CharField(max_length=128)
    filename = models.CharField(max_length=255, blank=True)
    audio_bytes = models.PositiveBigIntegerField()
    audio_mime_type = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.id


class SandboxFeedback(models.Model):
    """Feedback received for a stored response, kept exactly as sent."""

    owner_key = models.CharField(max_length=64)
    owner_user = models.CharField(max_length=128)
    response_id = models.CharField(max_length=64)
    rating = models.CharField(max_length=16, null=True, blank=True)
    description = models.TextField(null=True, blank=True)
    body = models.JSONField()  # the request body as received
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.rating or '-'} for {self.response_id}"
