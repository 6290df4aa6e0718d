"""Files users send (voice notes, photos, documents): kept, and understood through MKA1.

The worker, never the webhook, fetches a message's file through its channel (the
channel's contribution `fetch_media`), checks its size and checksum, and keeps it in
Django's storage under its SHA-256 (local files by default, S3-compatible storage by
settings). Then MKA1 understands it: a voice note is transcribed and its transcript is
the turn's input; a photo or a document is given to MKA1 with its caption (or a default
question), inline as a data URI when small, as an uploaded file otherwise. Every MKA1
call here is audited; the `responses.create` audit line names the media by digest and
reference, never by its bytes."""

import base64
import hashlib
import io
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from PIL import Image

from audit.models import AuditAction
from audit.services import audit_event_record
from multichannel.channels import fetch_media
from multichannel.durability import stored_despite_outage
from multichannel.mka1 import Mka1Error, Mka1Object, client
from multichannel.models import Media, UserMessage
from multichannel.services import mka1_failure_record

logger = logging.getLogger(__name__)

KINDS = (UserMessage.Kind.AUDIO, UserMessage.Kind.IMAGE, UserMessage.Kind.DOCUMENT)


class MediaError(Exception):
    """The file cannot be used: `reason` says why in words for the user, `detail` for
    the record. `transient`: fetching it again later may work."""

    transient = False

    def __init__(self, reason: str, *, transient: bool = False, detail: str = "") -> None:
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason
        self.transient = transient


def media_reply(exc: Exception) -> str:
    """What the user is told when their file cannot be used."""
    reason = exc.reason if isinstance(exc, MediaError) and not exc.transient else ""
    return settings.MEDIA_FAILURE_REPLY.format(reason=reason or "I could not download it")


def media_keep(*, media: Media, content: bytes) -> None:
    """Check the file and keep it in storage under its SHA-256 (once per content)."""
    if len(content) > settings.MEDIA_MAX_BYTES:
        raise MediaError(f"it is larger than {size_text(settings.MEDIA_MAX_BYTES)}")
    digest = hashlib.sha256(content).hexdigest()
    if media.expected_sha256 and media.expected_sha256.lower() != digest:
        raise MediaError("it arrived damaged (its checksum does not match)")
    name = f"media/{digest}"
    if not default_storage.exists(name):
        name = default_storage.save(name, ContentFile(content))
    media.sha256, media.size, media.stored_name = digest, len(content), name
    media.save(update_fields=["sha256", "size", "stored_name", "updated_at"])


def size_text(size: int) -> str:
    """A size as a person reads it: 25 MB, 300 KB, 12 bytes."""
    if size >= 2**20:
        return f"{size / 2**20:.3g} MB"
    if size >= 2**10:
        return f"{size / 2**10:.3g} KB"
    return f"{size} bytes"


def media_content(media: Media) -> bytes:
    with default_storage.open(media.stored_name, "rb") as stored:
        data: bytes = stored.read()
    return data


def media_ensure_kept(media: Media) -> None:
    """The file, fetched from the channel unless it is kept already (a redelivered
    webhook or a retry never downloads twice)."""
    if media.stored:
        return
    media_keep(media=media, content=fetch_media(media))


@dataclass(frozen=True)
class TurnInput:
    """What a turn asks MKA1: `text` as the user put it (a transcript, a caption),
    `mka1` as sent in responses.create, `audit` the same with media by reference."""

    text: str
    mka1: str | list[dict[str, Any]]
    audit: str | list[dict[str, Any]]


def turn_input_prepare(message: UserMessage) -> TurnInput:
    """The input of the turn that answers `message`: its text, or its file understood
    (fetching, transcribing or uploading it first, each at most once)."""
    if message.kind not in KINDS:
        return TurnInput(message.text, message.text, message.text)
    media = message.media
    media_ensure_kept(media)
    if message.kind == UserMessage.Kind.AUDIO:
        transcript = media_transcribe(media, message=message)
        if not transcript.strip():
            raise MediaError("I could not hear any words in it")
        return TurnInput(transcript, transcript, transcript)
    if message.kind == UserMessage.Kind.IMAGE:
        question = media.caption or settings.MEDIA_IMAGE_PROMPT
    else:
        question = media.caption or settings.MEDIA_DOCUMENT_PROMPT
    part, reference = _media_part(media, message=message)
    text_part = {"type": "input_text", "text": question}
    return TurnInput(
        question,
        [{"role": "user", "content": [text_part, part]}],
        [{"role": "user", "content": [text_part, reference]}],
    )


def _media_part(media: Media, *, message: UserMessage) -> tuple[dict[str, Any], dict[str, Any]]:
    """The input part for a photo or a document, and how the audit names it."""
    image = message.kind == UserMessage.Kind.IMAGE
    reference: dict[str, Any] = {
        "type": "input_image" if image else "input_file",
        "sha256": media.sha256,
        "bytes": media.size,
        "mime_type": media.mime_type,
    }
    if not image:
        reference["filename"] = media.filename or "document"
    if (media.size or 0) > settings.MKA1_INLINE_MEDIA_MAX_BYTES:
        file_id = media_upload(media, message=message)
        reference["file_id"] = file_id
        part: dict[str, Any] = {"type": reference["type"], "file_id": file_id}
    else:
        encoded = base64.b64encode(media_content(media)).decode()
        data_uri = f"data:{media.mime_type};base64,{encoded}"
        reference["sent_as"] = "data_uri"
        part = (
            {"type": "input_image", "image_url": data_uri}
            if image
            else {
                "type": "input_file",
                "file_data": data_uri,
            }
        )
    if not image:
        part["filename"] = reference["filename"]
    return part, reference


def media_transcribe(media: Media, *, message: UserMessage) -> str:
    """The voice note's transcript, asked of MKA1 once and kept; audited as
    `speech.transcriptions` with MKA1's answer."""
    if media.transcribed:
        return media.transcript
    mka1 = client()
    answer = _media_call(
        lambda: mka1.transcribe(
            message.end_user_id,
            filename=media.filename or f"voice-{media.sha256[:12]}",
            content=media_content(media),
            content_type=media.mime_type.split(";")[0].strip() or "application/octet-stream",
        ),
        operation="speech.transcriptions",
        media=media,
        message=message,
    )
    text = answer.data.get("text")
    language = answer.data.get("language")
    media.transcript = text if isinstance(text, str) else ""
    media.transcript_language = language[:32] if isinstance(language, str) else ""
    media.transcribed = True
    _media_result_keep(
        media,
        message,
        answer,
        action=AuditAction.SPEECH_TRANSCRIPTIONS,
        fields=["transcript", "transcript_language", "transcribed"],
    )
    return media.transcript


def media_upload(media: Media, *, message: UserMessage) -> str:
    """The id of the file at MKA1, uploaded once and kept; audited as `files.create`."""
    if media.mka1_file_id:
        return media.mka1_file_id
    mka1 = client()
    answer = _media_call(
        lambda: mka1.upload_file(
            message.end_user_id,
            filename=media.filename or f"{message.kind}-{media.sha256[:12]}",
            content=media_content(media),
            content_type=media.mime_type,
        ),
        operation="files.create",
        media=media,
        message=message,
    )
    if not answer.id:
        raise MediaError("MKA1 kept the file without an id", transient=True)
    media.mka1_file_id = answer.id
    _media_result_keep(
        media, message, answer, action=AuditAction.FILES_CREATE, fields=["mka1_file_id"]
    )
    return media.mka1_file_id


def _media_call(
    call: Callable[[], Mka1Object], *, operation: str, media: Media, message: UserMessage
) -> Mka1Object:
    """An MKA1 call about a file; a failure is audited (`<operation>.failed`) and raised."""
    try:
        return call()
    except Mka1Error as exc:
        mka1_failure_record(
            channel=message.channel,
            operation=operation,
            end_user_id=message.end_user_id,
            exc=exc,
            context=_media_context(media, message),
        )
        raise


def _media_result_keep(
    media: Media, message: UserMessage, answer: Mka1Object, *, action: str, fields: list[str]
) -> None:
    """What MKA1 did with the file (a transcript, a file id), kept with its audit event
    in one transaction, waiting out a briefly unavailable database: MKA1 has done it,
    and a retry that found nothing stored would do it again (a second transcription, an
    orphaned upload)."""
    mka1 = client()

    def store() -> None:
        with transaction.atomic():
            audit_event_record(
                channel=message.channel,
                action=action,
                end_user_id=message.end_user_id,
                full_response=answer,
                api_key_fingerprint=mka1.key_fingerprint,
                context=_media_context(media, message),
            )
            media.save(update_fields=[*fields, "updated_at"])

    stored_despite_outage(store, what=f"{action} of media {media.pk}", wait=mka1.wait)


def _media_context(media: Media, message: UserMessage) -> dict[str, Any]:
    context: dict[str, Any] = {
        "message_id": str(message.pk),
        "media_sha256": media.sha256,
        "media_bytes": media.size,
        "mime_type": media.mime_type,
    }
    if message.external_id:
        context[f"{message.channel}_message_id"] = message.external_id
    return context


THUMBNAIL_SIZE = (320, 320)


def thumbnail_name(digest: str) -> str:
    return f"thumbnails/{digest}.jpg"


def stored_files_delete(files: Mapping[str, str]) -> None:
    """Delete kept files (SHA-256 -> stored name) and their thumbnails that no media row
    needs any more: a file is kept once per content, and may serve other messages."""
    needed = set(Media.objects.filter(sha256__in=list(files)).values_list("sha256", flat=True))
    for digest, stored_name in files.items():
        if digest in needed:
            continue
        for name in (stored_name, thumbnail_name(digest)):
            try:
                default_storage.delete(name)
            except OSError:
                logger.exception("could not delete stored file %s", name)


def media_thumbnail(media: Media) -> bytes:
    """A small JPEG of a kept photo, made once and kept beside it. ValueError when the
    file is not an image Pillow can read (or is a decompression bomb)."""
    name = thumbnail_name(media.sha256)
    if default_storage.exists(name):
        with default_storage.open(name, "rb") as stored:
            cached: bytes = stored.read()
        return cached
    try:
        with Image.open(io.BytesIO(media_content(media))) as image:
            image.thumbnail(THUMBNAIL_SIZE)
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=80)
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(f"not a readable image: {type(exc).__name__}") from exc
    default_storage.save(name, ContentFile(out.getvalue()))
    return out.getvalue()
