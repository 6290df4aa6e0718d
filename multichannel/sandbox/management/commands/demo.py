import json
import re
import secrets
import time
from io import StringIO
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError, CommandParser

from audit.evidence import LABELS, cross_channel_pairs
from audit.toolkit import StrictCommand
from audit.verification import verify_database
from multichannel.models import Media, UserMessage
from multichannel.processing import user_messages_process
from multichannel.sandbox import whatsapp as wa
from multichannel.sandbox.audio import spoken_wav
from multichannel.sandbox.media import media_message_event, media_upload
from multichannel.sandbox.models import SandboxGraphMessage
from multichannel.sandbox.phone_views import webhook_post
from multichannel.sandbox.transport import in_process_browser

QUESTION = "What is the capital of France?"
SPOKEN = "And what is the capital of Italy?"
LINK_RE = re.compile(r"https?://\S+/signin/(?P<token>[A-Za-z0-9_-]+)")


class Command(StrictCommand):
    help = (
        "Run the seed guide's two-channel scenario on the sandbox, in process, printing "
        "each step: a signed WhatsApp webhook becomes a stored response and a reply; the "
        "same person signs in on the web and retrieves that response; the unified JSONL and "
        "the evidence report follow. Exits non-zero if any step fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds per step")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.SANDBOX:
            raise CommandError("the demo runs on the sandbox; set DEBUG=true and leave SANDBOX on")
        call_command("migrate", interactive=False, verbosity=0)
        self.timeout = options["timeout"]
        phone = "1555" + "".join(secrets.choice("0123456789") for _ in range(7))

        self.step(1, f'WhatsApp: {phone} sends "{QUESTION}" (a signed webhook)')
        message = self.whatsapp(phone, QUESTION)
        turn = message.turn
        if turn is None:
            raise CommandError(f"the message was not answered (state {message.state})")
        self.say(f"end user {message.end_user_id} (X-On-Behalf-Of)")
        self.say(f"stored response {turn.response_id} in conversation {turn.conversation}")
        self.say(f'reply sent on WhatsApp: "{message.reply_text}"')

        self.step(2, f'WhatsApp: {phone} asks by voice note: "{SPOKEN}"')
        voice = self.whatsapp(phone, SPOKEN, voice=True)
        media = Media.objects.get(message=voice)
        self.say(f"voice note kept as {media.stored_name} ({media.size} bytes)")
        self.say(f'transcribed by MKA1 (speech.transcriptions): "{media.transcript}"')
        self.say(f'reply sent on WhatsApp: "{voice.reply_text}"')
        if media.transcript != SPOKEN or voice.reply_text != f"You said: {SPOKEN}":
            raise CommandError("the voice note was not understood")

        self.step(3, "Web: the same person sends LOGIN and opens the one-time link")
        self.whatsapp(phone, settings.LOGIN_KEYWORD)
        sent = SandboxGraphMessage.objects.filter(kind="text", recipient=phone).last()
        link = LINK_RE.search(sent.body["text"]["body"]) if sent else None
        if link is None:
            raise CommandError("no sign-in link reached the phone")
        browser, base = in_process_browser()
        # As a person would: open the link, see the page, press the button.
        page = browser.get(f"{base}/signin/{link['token']}", timeout=self.timeout)
        if page.status_code != 200 or "Continue" not in page.text:
            raise CommandError(f"opening the sign-in link answered {page.status_code}")
        signed_in = browser.post(
            f"{base}/signin",
            data={"csrfmiddlewaretoken": browser.cookies.get("csrftoken", "")},
            allow_redirects=False,
            timeout=self.timeout,
        )
        if signed_in.status_code != 302:
            raise CommandError(f"the sign-in link was refused ({signed_in.status_code})")
        answer = browser.get(f"{base}/api/multichannel/{turn.response_id}", timeout=self.timeout)
        if answer.status_code != 200:
            raise CommandError(
                f"GET /api/multichannel/{turn.response_id} answered {answer.status_code}"
            )
        record = answer.json()
        self.say(
            f"GET /api/multichannel/{turn.response_id} -> 200, "
            f"conversation {record['conversation_id']}"
        )

        self.step(4, f"Unified audit log (export_audit --response {turn.response_id})")
        out = StringIO()
        call_command("export_audit", "--response", turn.response_id, stdout=out)
        lines = out.getvalue().splitlines()
        for line in lines:
            self.stdout.write(line)
        channels = [json.loads(line)["channel"] for line in lines]
        if channels != ["whatsapp", "webapp"]:
            raise CommandError(f"expected a whatsapp and a webapp event, found {channels}")

        self.step(5, "Evidence: the seed guide's four conditions")
        pairs = list(cross_channel_pairs(response_id=turn.response_id))
        if not pairs:
            raise CommandError("no cross-channel pair for the response")
        for name, ok in pairs[0].checks.items():
            self.say(f"{'PASS' if ok else 'FAIL'}  {LABELS[name]}")
        if not all(pair.passed for pair in pairs):
            raise CommandError("the evidence report failed")

        self.step(6, "Ledger integrity (verify_audit)")
        verdict = verify_database()
        self.say(verdict.describe())
        if not verdict.ok:
            raise CommandError("the audit chain does not verify")
        self.stdout.write(self.style.SUCCESS("\nDemo passed."))

    def step(self, number: int, text: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"\n{number}. {text}"))

    def say(self, text: str) -> None:
        self.stdout.write(f"   {text}")

    def whatsapp(self, phone: str, text: str, *, voice: bool = False) -> UserMessage:
        if voice:  # the sandbox's MKA1 transcribes a spoken WAV as the text it carries
            uploaded = media_upload(spoken_wav(text), mime_type="audio/wav", filename="voice.wav")
            event = media_message_event(uploaded, voice=True, wa_id=phone)
        else:
            event = wa.message_event(wa_id=phone, text=text)
        status = webhook_post(wa.webhook_payload([event]))
        if status != 200:
            raise CommandError(f"the webhook answered {status}")
        self.say(f"POST /whatsapp/webhook -> {status}")
        wamid = event["message"]["id"]
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = UserMessage.objects.select_related("turn").filter(external_id=wamid).first()
            if message is None:
                # The webhook kept the delivery and queued its fan-out: run queued work
                # here (a running worker may take it first; then we wait for it).
                if not run_one_queued_task():
                    time.sleep(0.1)
                continue
            if message.state == UserMessage.State.DELIVERED:
                return message
            if message.state == UserMessage.State.FAILED:
                raise CommandError(f"answering failed: {message.error}")
            # Answer it here; if a running worker holds the user's lease, it answers and
            # we wait for it.
            if user_messages_process(end_user_id=message.end_user_id).outcome == "busy":
                time.sleep(0.2)
        raise CommandError(f"no answer within {self.timeout:.0f}s")


def run_one_queued_task() -> bool:
    """Run the next queued task in this process, as a worker would; False if none."""
    from huey.contrib.djhuey import HUEY

    task = HUEY.dequeue()
    if task is None:
        return False
    HUEY.execute(task)
    return True
