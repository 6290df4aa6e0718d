"""The MKA1 stand-in's endpoints for what is not text: speech-to-text (and the history
MKA1 keeps of it), uploaded files, and feedback on stored responses. Owned per API key
and `X-On-Behalf-Of` user like responses; another owner's object is "not found"."""

import hashlib
import os
from datetime import datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_http_methods

from multichannel.mka1 import is_response_id
from multichannel.sandbox.audio import transcript_of
from multichannel.sandbox.mka1_api import (
    Caller,
    by_method,
    error_answer,
    json_answer,
    json_body,
    mka1_endpoint,
    new_id,
    not_found,
)
from multichannel.sandbox.models import (
    SandboxFeedback,
    SandboxFile,
    SandboxResponse,
    SandboxTranscription,
)

TRANSCRIPTION_LIMIT = 25 * 1024 * 1024  # MKA1's (and OpenAI's) 25 MB
AUDIO_EXTENSIONS = {
    "flac",
    "mp3",
    "mp4",
    "mpeg",
    "mpga",
    "m4a",
    "ogg",
    "oga",
    "opus",
    "wav",
    "webm",
}
AUDIO_TYPES = {"video/mp4", "video/webm", "video/mpeg", "application/ogg"}
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
RATINGS = ("thumbs_up", "thumbs_down")
DESCRIPTION_LIMIT = 2000


def _invalid(message: str, param: str | None = None) -> HttpResponse:
    return error_answer(400, message, "invalid_request_error", param)


def _multipart(request: HttpRequest) -> HttpResponse | None:
    if request.content_type != "multipart/form-data":
        return error_answer(
            415, "Content-Type must be multipart/form-data", "invalid_request_error"
        )
    return None


def _too_large(request: HttpRequest, limit: int) -> bool:
    # Refused before the body is parsed: the multipart framing adds little.
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) > limit + 64 * 1024
    except ValueError:
        return False


# --- speech to text ------------------------------------------------------------------


def _is_audio(filename: str, content_type: str) -> bool:
    extension = os.path.splitext(filename)[1].lower().lstrip(".")
    mime = content_type.split(";", 1)[0].strip().lower()
    return extension in AUDIO_EXTENSIONS or mime.startswith("audio/") or mime in AUDIO_TYPES


def _history_object(stt: SandboxTranscription) -> dict[str, Any]:
    return {
        "id": stt.id,
        "object": "speech.transcription",
        "text": stt.text,
        "language": stt.language,
        "confidence": None,
        "model": stt.model,
        "provider_id": None,
        "filename": stt.filename or None,
        "audio_bytes": stt.audio_bytes,
        "audio_mime_type": stt.audio_mime_type or None,
        "speakers": None,
        "streaming": False,
        "metadata": {},
        "created_at": int(stt.created_at.timestamp()),
    }


@require_http_methods(["POST"])
@mka1_endpoint("speech.transcriptions")
def transcriptions_create(request: HttpRequest, caller: Caller) -> HttpResponse:
    refused = _multipart(request)
    if refused is not None:
        return refused
    if _too_large(request, TRANSCRIPTION_LIMIT):
        return _file_too_large()
    upload = request.FILES.get("file")
    if upload is None:
        return _invalid("file is required", "file")
    if (upload.size or 0) > TRANSCRIPTION_LIMIT:
        return _file_too_large()
    if not upload.size:
        return _invalid("The audio file is empty", "file")
    filename = upload.name or ""
    content_type = upload.content_type or ""
    if not _is_audio(filename, content_type):
        return _invalid(
            "Unsupported audio format: send FLAC, MP3, MP4, MPEG, MPGA, M4A, OGG, WAV or WebM",
            "file",
        )
    language = request.GET.get("language") or "en"
    stt = SandboxTranscription.objects.create(
        id=new_id("stt"),
        text=transcript_of(upload.read()),
        language=language,
        model=request.GET.get("model") or "auto",
        filename=filename,
        audio_bytes=upload.size,
        audio_mime_type=content_type,
        **caller.owner,
    )
    return json_answer({"text": stt.text, "language": stt.language})


def _file_too_large() -> HttpResponse:
    return error_answer(
        413,
        f"Maximum content size limit ({TRANSCRIPTION_LIMIT} bytes) exceeded",
        "invalid_request_error",
        "file_too_large",
    )


@require_http_methods(["GET"])
@mka1_endpoint("speech.transcriptions.history.list")
def transcriptions_history(request: HttpRequest, caller: Caller) -> HttpResponse:
    try:
        limit = int(request.GET.get("limit", "20"))
    except ValueError:
        return _invalid("limit must be an integer", "limit")
    if not 1 <= limit <= 100:
        return _invalid("limit must be between 1 and 100", "limit")
    order = request.GET.get("order", "desc")  # newest first, as MKA1 lists history
    if order not in ("asc", "desc"):
        return _invalid("order must be asc or desc", "order")
    held = SandboxTranscription.objects.filter(**caller.owner)
    if request.GET.get("model"):
        held = held.filter(model=request.GET["model"])
    rows = held.order_by(*(("created_at", "id") if order == "asc" else ("-created_at", "-id")))
    after = request.GET.get("after")
    if after:
        ids = list(rows.values_list("id", flat=True))
        if after not in ids:
            return not_found(f"Transcription {after}")
        rows = rows.filter(id__in=ids[ids.index(after) + 1 :])
    page = list(rows[: limit + 1])
    data = [_history_object(stt) for stt in page[:limit]]
    return json_answer(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(page) > limit,
        }
    )


@require_http_methods(["DELETE"])
@mka1_endpoint("speech.transcriptions.history.delete")
def transcriptions_history_delete(
    request: HttpRequest, caller: Caller, stt_id: str
) -> HttpResponse:
    deleted, _ = SandboxTranscription.objects.filter(id=stt_id, **caller.owner).delete()
    if not deleted:
        return not_found(f"Transcription {stt_id}")
    return json_answer({"id": stt_id, "object": "speech.transcription", "deleted": True})


# --- files ---------------------------------------------------------------------------


def _file_object(stored: SandboxFile) -> dict[str, Any]:
    return {
        "id": stored.id,
        "object": "file",
        "bytes": stored.size,
        "created_at": int(stored.created_at.timestamp()),
        "expires_at": None,
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": "processed",
        "status_details": None,
        "sha256": stored.sha256,
    }


@require_http_methods(["POST"])
@mka1_endpoint("files.create")
def files_create(request: HttpRequest, caller: Caller) -> HttpResponse:
    refused = _multipart(request)
    if refused is not None:
        return refused
    purpose = request.POST.get("purpose", "")
    if purpose not in FILE_PURPOSES:
        return _invalid(f"purpose must be one of {', '.join(FILE_PURPOSES)}", "purpose")
    upload = request.FILES.get("file")
    if upload is None:
        return _invalid("file is required", "file")
    filename = (upload.name or "").strip()
    # As MKA1 says: a part needs a real filename; the browsers' placeholder "blob" is none.
    if not filename or filename == "blob":
        return _invalid("The file part needs a filename", "file")
    if not upload.size:
        return _invalid("The file is empty", "file")
    data = upload.read()
    stored = SandboxFile.objects.create(
        id=new_id("file", "-"),
        filename=filename,
        purpose=purpose,
        mime_type=upload.content_type or "",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        data=data,
        **caller.owner,
    )
    return json_answer(_file_object(stored))


@mka1_endpoint("files.get")
def files_get(request: HttpRequest, caller: Caller, file_id: str) -> HttpResponse:
    stored = SandboxFile.objects.filter(id=file_id, **caller.owner).defer("data").first()
    if stored is None:
        return not_found(f"File {file_id}")
    return json_answer(_file_object(stored))


@mka1_endpoint("files.delete")
def files_delete(request: HttpRequest, caller: Caller, file_id: str) -> HttpResponse:
    deleted, _ = SandboxFile.objects.filter(id=file_id, **caller.owner).delete()
    if not deleted:
        return not_found(f"File {file_id}")
    return json_answer({"id": file_id, "object": "file", "deleted": True})


file_detail = by_method(GET=files_get, DELETE=files_delete)


# --- feedback ------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@require_http_methods(["POST"])
@mka1_endpoint("feedback.create")
def feedback_create(request: HttpRequest, caller: Caller) -> HttpResponse:
    body = json_body(request)
    if isinstance(body, HttpResponse):
        return body
    response_id = body.get("id")
    if not isinstance(response_id, str) or not response_id:
        return _invalid("id is required", "id")
    rating = body.get("rating")
    if rating is not None and rating not in RATINGS:
        return _invalid("rating must be thumbs_up or thumbs_down", "rating")
    description = body.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > DESCRIPTION_LIMIT
    ):
        return _invalid(
            f"description must be a string of at most {DESCRIPTION_LIMIT}", "description"
        )
    if rating is None and description is None:
        return _invalid("give a rating, a description, or both")
    stored = (
        SandboxResponse.objects.filter(id=response_id, **caller.owner).only("created_at").first()
        if is_response_id(response_id)
        else None
    )
    if stored is None:
        return not_found(f"Response {response_id}")
    feedback = SandboxFeedback.objects.create(
        response_id=response_id,
        rating=rating,
        description=description,
        body=body,
        **caller.owner,
    )
    # The SDK's CreateFeedbackResponse describes the feedback of the output: `id` is the
    # response's, `created_at` when that output was made, `updated_at` its last change.
    return json_answer(
        {
            "id": response_id,
            "rating": rating,
            "description": description,
            "created_at": _iso(stored.created_at),
            "updated_at": _iso(feedback.updated_at),
        },
        201,
    )
