"""A small page that plays the WhatsApp user: it posts correctly signed webhooks to our
own endpoint and shows what the business sent back through the Graph API stand-in."""

import re

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_http_methods

from multichannel.sandbox import whatsapp as wa
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


@require_http_methods(["GET", "POST"])
def phone(request: HttpRequest) -> HttpResponse:
    number = request.GET.get("phone") or request.POST.get("phone") or "15551234567"
    error = ""
    if request.method == "POST":
        text = request.POST.get("text", "").strip()
        if not PHONE_RE.match(number):
            error = "Phone number: 6 to 15 digits, no +."
        elif not text:
            error = "Write something first."
        else:
            status = webhook_post(wa.webhook_payload([wa.message_event(wa_id=number, text=text)]))
            if status == 200:
                return redirect(f"{request.path}?phone={number}")
            error = f"The webhook answered {status}."
    received = SandboxGraphMessage.objects.filter(kind="text", recipient=number).order_by("-id")
    return render(
        request,
        "sandbox/phone.html",
        {
            "phone": number,
            "error": error,
            "received": [(m.created_at, _linkify(m.body["text"]["body"])) for m in received[:50]],
            "login_keyword": settings.LOGIN_KEYWORD,
        },
    )
