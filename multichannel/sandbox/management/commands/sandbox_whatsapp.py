import argparse
import re
from typing import Any

import requests
from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from audit.toolkit import StrictCommand
from multichannel.sandbox import whatsapp as wa
from multichannel.sandbox.phone_views import webhook_post

MESSAGE_TYPES = ["text", "image", "audio", "video", "document", "sticker", "location", "reaction"]


def phone_number(value: str) -> str:
    if not re.fullmatch(r"[0-9]{6,15}", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a phone number (6-15 digits, no +)")
    return value


class Command(StrictCommand):
    help = "Play the WhatsApp user: post a correctly signed webhook with one message."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("text", nargs="?", default="Hello", help="the message text")
        parser.add_argument("--from", dest="sender", type=phone_number, default="15551234567")
        parser.add_argument("--bsuid", help="send as a business-scoped user id (no phone)")
        parser.add_argument("--type", dest="message_type", choices=MESSAGE_TYPES, default="text")
        parser.add_argument(
            "--url",
            help="a running server's base URL (e.g. http://127.0.0.1:8000); "
            "default: deliver in this process",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.SANDBOX:
            raise CommandError("the sandbox is off (SANDBOX); this command is for development")
        event = wa.message_event(
            wa_id=None if options["bsuid"] else options["sender"],
            bsuid=options["bsuid"],
            text=options["text"],
            message_type=options["message_type"],
        )
        payload = wa.webhook_payload([event])
        if options["url"]:
            body = wa.encode(payload)
            try:
                answer = requests.post(
                    f"{options['url'].rstrip('/')}/whatsapp/webhook",
                    data=body,
                    headers=wa.webhook_headers(body, settings.WHATSAPP_APP_SECRET),
                    timeout=30,
                )
            except requests.RequestException as exc:
                raise CommandError(f"could not reach {options['url']}: {exc}") from exc
            status = answer.status_code
        else:
            status = webhook_post(payload)
        if status != 200:
            raise CommandError(f"the webhook answered {status}")
        self.stdout.write(f"delivered {event['message']['id']} (webhook answered 200)")
