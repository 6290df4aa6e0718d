"""The mappings both channels share: who the end user is, and where their thread stands."""

import secrets

from django.db import models

from audit.models import AuditChannel


def new_end_user_id() -> str:
    # Opaque and stable: this is the X-On-Behalf-Of value, so it must never be a
    # phone number or anything else that identifies the person to MKA1.
    return f"user_{secrets.token_hex(12)}"


class Channel(models.TextChoices):
    """Where a person talks to us: the ledger's channels, less its `operator`."""

    WHATSAPP = AuditChannel.WHATSAPP.value, AuditChannel.WHATSAPP.label
    WEBAPP = AuditChannel.WEBAPP.value, AuditChannel.WEBAPP.label


class EndUser(models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_end_user_id, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # When an erasure of this person began: from then on nothing of theirs is answered,
    # sent or shown, and what is left of the row is the id the ledger names.
    erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        permissions = [("erase_enduser", "Can erase an end user's data")]

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
    # The user's latest rating of this response (a 👍/👎 reaction on WhatsApp).
    feedback = models.CharField(max_length=16, blank=True)
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


class UserMessage(models.Model):
    """A message from the end user on either channel. Each user's messages are answered
    one at a time, in the order sent, whichever channel they came from."""

    class Kind(models.TextChoices):
        """The kinds the core answers through MKA1; channel apps add theirs (commands,
        fixed replies: see multichannel.channels)."""

        TEXT = "text", "Text (answered by MKA1)"
        AUDIO = "audio", "Voice note or audio (transcribed, then answered)"
        IMAGE = "image", "Photo (shown to MKA1 with its caption)"
        DOCUMENT = "document", "Document (given to MKA1 with its caption)"
        FEEDBACK = "feedback", "A rating of a reply (a reaction): sent to MKA1, never answered"

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"  # stored, not answered yet
        ANSWERED = "answered", "Answered"  # reply stored, not delivered yet
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"  # given up; the reason is in `error`

    end_user = models.ForeignKey(EndUser, on_delete=models.PROTECT, related_name="messages")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    # TEXT, or a kind a channel app contributes (a fixed or a secret reply, a command).
    kind = models.CharField(max_length=16, default=Kind.TEXT)
    # The channel's own id for the message (the WhatsApp message id), for tracing.
    external_id = models.CharField(max_length=255, blank=True)
    text = models.TextField(blank=True)
    sent_at = models.DateTimeField(help_text="When the user sent it, by the channel's clock.")
    created_at = models.DateTimeField(auto_now_add=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    turn = models.OneToOneField(
        Turn, on_delete=models.PROTECT, null=True, blank=True, related_name="message"
    )
    # Stored before delivery, so a failed send is retried without asking MKA1 again.
    reply_text = models.TextField(blank=True)
    # The last failure seen, kept after a later success as a record of the retry.
    error = models.TextField(blank=True)
    # Over the sender's rate limit: never sent to MKA1 (see multichannel.limits).
    limited = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sent_at", "id"]
        indexes = [
            models.Index(fields=["end_user", "state", "sent_at", "id"], name="message_user_queue"),
            models.Index(fields=["state", "next_attempt_at"], name="message_state_due"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} message {self.pk} ({self.state})"

    @property
    def finished(self) -> bool:
        return self.state in (self.State.DELIVERED, self.State.FAILED)


class Media(models.Model):
    """A file a user sent with a message: fetched from the channel by the worker (never
    in the webhook), kept in Django's storage under its SHA-256, and shown to MKA1 (a
    voice note as its transcript, a photo or document as input)."""

    message = models.OneToOneField(UserMessage, on_delete=models.PROTECT, related_name="media")
    # The channel's id for the file (WhatsApp's media id: valid for days).
    external_id = models.CharField(max_length=255)
    mime_type = models.CharField(max_length=128)
    filename = models.CharField(max_length=255, blank=True)
    caption = models.TextField(blank=True)
    voice = models.BooleanField(default=False, help_text="Recorded as a voice note")
    # What the channel said the file's SHA-256 is; the download must match it.
    expected_sha256 = models.CharField(max_length=64, blank=True)
    # Set once the file is kept: its digest, size and name in storage.
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    size = models.PositiveBigIntegerField(null=True, blank=True)
    stored_name = models.CharField(max_length=255, blank=True)
    # What MKA1 made of it: a voice note's transcript, an uploaded file's id.
    transcript = models.TextField(blank=True)
    transcript_language = models.CharField(max_length=32, blank=True)
    transcribed = models.BooleanField(default=False)
    mka1_file_id = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "media"

    def __str__(self) -> str:
        return f"{self.message.kind} {self.sha256[:12] or self.external_id}"

    @property
    def stored(self) -> bool:
        return bool(self.stored_name)


class ProcessingLease(models.Model):
    """Who is answering an end user's messages right now. At most one worker holds it,
    so one user's turns never run concurrently; it expires if that worker dies."""

    end_user = models.OneToOneField(
        EndUser, on_delete=models.CASCADE, primary_key=True, related_name="lease"
    )
    owner = models.CharField(max_length=64)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.end_user_id} held by {self.owner} until {self.expires_at:%H:%M:%S}"


class Erasure(models.Model):
    """One person's erasure (multichannel.privacy): a durable job that moves through its
    steps in order, saving its progress after each call, so a crash continues where it
    stopped and running it again is harmless. What it removed is kept here and in its
    `erasure` audit event; no personal content is."""

    class Step(models.TextChoices):
        BEGIN = "begin", "Not started"
        MKA1_RESPONSES = "mka1_responses", "Deleting stored responses at MKA1"
        MKA1_ITEMS = "mka1_items", "Deleting conversation items at MKA1"
        MKA1_CONVERSATION = "mka1_conversation", "Deleting the conversation at MKA1"
        MKA1_FILES = "mka1_files", "Deleting uploaded files at MKA1"
        MKA1_TRANSCRIPTIONS = "mka1_transcriptions", "Deleting transcriptions at MKA1"
        DATABASE = "database", "Deleting messages, replies, media and sign-ins here"
        NOTIFY = "notify", "Telling the person"
        IDENTITY = "identity", "Keeping only a keyed hash of the channel ids"
        LEDGER = "ledger", "Recording the erasure and removing content from the ledger"
        DONE = "done", "Done"

    end_user = models.ForeignKey(EndUser, on_delete=models.PROTECT, related_name="erasures")
    # Who asked and why (no personal content: a case number, not a name).
    requested_by = models.CharField(max_length=255)
    reason = models.TextField()
    requested_at = models.DateTimeField(auto_now_add=True)
    # The channel to send the final confirmation on (the person asked there), if any.
    notify_channel = models.CharField(max_length=16, choices=Channel.choices, blank=True)
    step = models.CharField(max_length=32, choices=Step.choices, default=Step.BEGIN)
    # What has been removed so far: counts, and the MKA1 ids deleted (or found gone).
    removed = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # The last failure, kept after a later success as a record of the retry.
    error = models.TextField(blank=True)
    # The sequence of its `erasure` audit event, once recorded.
    audit_sequence = models.PositiveBigIntegerField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The processing lease a run of it holds (not stored: one per run).
    lease_owner = ""

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            # One erasure per person at a time; a second request joins the first.
            models.UniqueConstraint(
                fields=["end_user"],
                condition=models.Q(finished_at__isnull=True),
                name="erasure_one_unfinished_per_user",
            ),
        ]

    def __str__(self) -> str:
        return f"erasure {self.pk} of {self.end_user_id} ({self.get_step_display()})"

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


class LegalHold(models.Model):
    """Evidence that must be kept: while a hold is active, the person's data is neither
    erased nor removed by retention. Holds are ended, never deleted."""

    end_user = models.ForeignKey(EndUser, on_delete=models.PROTECT, related_name="legal_holds")
    reason = models.TextField()
    added_by = models.CharField(max_length=255)
    added_at = models.DateTimeField(auto_now_add=True)
    removed_by = models.CharField(max_length=255, blank=True)
    removed_reason = models.TextField(blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-added_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["end_user"],
                condition=models.Q(removed_at__isnull=True),
                name="legal_hold_one_active_per_user",
            ),
        ]

    def __str__(self) -> str:
        state = "active" if self.active else "ended"
        return f"legal hold on {self.end_user_id} ({state})"

    @property
    def active(self) -> bool:
        return self.removed_at is None
