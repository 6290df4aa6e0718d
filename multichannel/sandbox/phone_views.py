"""A small page that plays the WhatsApp user: it posts correctly signed webhooks to our
own endpoint (texts, photos, documents, audio files and spoken voice notes, the media
uploaded to the Graph API stand-in first, as Meta holds what a user sends) and shows
what the business sent back through the Graph API stand-in."""

import re
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_http_methods

from multichannel.sandbox import whatsapp as wa
from multichannel.sandbox.audio import spoken_wav
from multichannel.sandbox.media import (
    MediaUploadError,
    media_message_event,
    media_upload,
    mime_type_of,
)
from multichannel.sandbox.models import SandboxGraphMessage
from multichannel.sandbox.transport import in_process_post

PHONE_RE = re.compile(r"^[0-9]{6,15}$")
LINK_RE = re.compile(r"(https?://[^\s<]+)")


def webhook_post(payload: dict[str, object]) -> int:
    """Deliver a payload to our webhook as Meta would (signed), in this process."""
    body = wa.encode(payload)
    return in_process_post(
        "/whatsapp/webhook", body, wa.webhook_headers(body, settings.WHATSAPP_APP_SECRET)
    )


def _linkify(text: str) -> SafeString:
    return mark_safe(LINK_RE.sub(r'<a href="\1">\1</a>', str(escape(text))))  # noqa: S308


def _shown(message: SandboxGraphMessage) -> SafeString:
    if message.kind == "template":
        template = message.body["template"]
        return _linkify(f"[template {template['name']} ({template['language']['code']})]")
    return _linkify(message.body["text"]["body"])


def _event(number: str, text: str, attachment: UploadedFile | None, voice: bool) -> dict[str, Any]:
    """The webhook message for what the user sent: an attachment (the text its
    caption), the text spoken as a voice note, or the text."""
    if attachment is not None:
        name = attachment.name or "attachment"
        mime_type = attachment.content_type or mime_type_of(name)
        media = media_upload(attachment.read(), mime_type=mime_type, filename=name)
        return media_message_event(media, caption=text, voice=voice, wa_id=number)
    if voice:
        media = media_upload(spoken_wav(text), mime_type="audio/wav", filename="voice-note.wav")
        return media_message_event(media, message_type="audio", voice=True, wa_id=number)
    return wa.message_event(wa_id=number, text=text)


@require_http_methods(["GET", "POST"])
def phone(request: HttpRequest) -> HttpResponse:
    number = request.GET.get("phone") or request.POST.get("phone") or "15551234567"
    error = ""
    if request.method == "POST":
        text = request.POST.get("text", "").strip()
        attachment = request.FILES.get("attachment")
        voice = request.POST.get("voice") == "on"
        if not PHONE_RE.match(number):
            error = "Phone number: 6 to 15 digits, no +."
        elif not text and attachment is None:
            error = "Write something or attach a file first."
        else:
            try:
                status = webhook_post(wa.webhook_payload([_event(number, text, attachment, voice)]))
            except MediaUploadError as exc:
                error = f"The Graph API stand-in refused the file: {exc}"
            else:
                if status == 200:
                    return redirect(f"{request.path}?phone={number}")
                error = f"The webhook answered {status}."
    received = SandboxGraphMessage.objects.filter(
        kind__in=("text", "template"), recipient=number
    ).order_by("-id")
    return render(
        request,
        "sandbox/phone.html",
        {
            "phone": number,
            "error": error,
            "received": [(m.created_at, _shown(m)) for m in received[:50]],
            "login_keyword": settings.LOGIN_KEYWORD,
        },
    )
