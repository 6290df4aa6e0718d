import argparse
import re
from pathlib import Path
from typing import Any

import requests
from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from audit.toolkit import StrictCommand
from multichannel.sandbox import whatsapp as wa
from multichannel.sandbox.audio import spoken_wav
from multichannel.sandbox.media import (
    MediaUploadError,
    media_kind,
    media_message_event,
    media_upload,
    mime_type_of,
)
from multichannel.sandbox.phone_views import webhook_post

MESSAGE_TYPES = ["text", "image", "audio", "video", "document", "sticker", "location", "reaction"]
FILE_TYPES = ("image", "audio", "document")


def phone_number(value: str) -> str:
    if not re.fullmatch(r"[0-9]{6,15}", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a phone number (6-15 digits, no +)")
    return value


def readable_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value!r} is not a readable file")
    return path


class Command(StrictCommand):
    help = (
        "Play the WhatsApp user: post a correctly signed webhook with one message. With "
        "--file, the file is uploaded to the Graph API stand-in first and sent as an image, "
        "document or audio message (the text as its caption); --type audio --voice without "
        "a file speaks the text as a voice note."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("text", nargs="?", help="the message text (default Hello), or caption")
        parser.add_argument("--from", dest="sender", type=phone_number, default="15551234567")
        parser.add_argument("--bsuid", help="send as a business-scoped user id (no phone)")
        parser.add_argument("--type", dest="message_type", choices=MESSAGE_TYPES)
        parser.add_argument(
            "--file", type=readable_file, help="send this file (image, document or audio)"
        )
        parser.add_argument("--voice", action="store_true", help="an audio message is a voice note")
        parser.add_argument("--react-to", metavar="WAMID", help="a reaction to this message")
        parser.add_argument(
            "--emoji", default="\U0001f44d", help="the reaction's emoji ('' takes it back)"
        )
        parser.add_argument(
            "--url",
            help="a running server's base URL (e.g. http://127.0.0.1:8000); "
            "default: deliver in this process",
        )
        parser.add_argument(
            "--graph-url",
            help="the Graph API stand-in to upload media to (default: the --url server's "
            "/sandbox/graph, or in process)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.SANDBOX:
            raise CommandError("the sandbox is off (SANDBOX); this command is for development")
        event = self.event(options)
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

    def event(self, options: dict[str, Any]) -> dict[str, Any]:
        sender = {
            "wa_id": None if options["bsuid"] else options["sender"],
            "bsuid": options["bsuid"],
        }
        file: Path | None = options["file"]
        message_type: str | None = options["message_type"]
        text: str | None = options["text"]
        if options["react_to"] is not None:
            if message_type not in (None, "reaction") or file is not None:
                raise CommandError("--react-to sends a reaction; it takes no --type or --file")
            return wa.reaction_event(options["react_to"], options["emoji"], **sender)
        if file is not None:
            mime_type = mime_type_of(file.name)
            message_type = message_type or media_kind(mime_type)
            if message_type not in FILE_TYPES:
                raise CommandError(f"--file goes with --type {', '.join(FILE_TYPES)}")
            media = self.upload(file.read_bytes(), mime_type, file.name, options)
            return media_message_event(
                media, message_type=message_type, caption=text, voice=options["voice"], **sender
            )
        if options["voice"]:
            if message_type not in (None, "audio"):
                raise CommandError("--voice goes with --type audio")
            spoken = text or "Hello"
            media = self.upload(spoken_wav(spoken), "audio/wav", "voice-note.wav", options)
            return media_message_event(media, message_type="audio", voice=True, **sender)
        return wa.message_event(**sender, text=text or "Hello", message_type=message_type or "text")

    def upload(self, data: bytes, mime_type: str, filename: str, options: dict[str, Any]) -> Any:
        graph_url = options["graph_url"] or (
            f"{options['url'].rstrip('/')}/sandbox/graph" if options["url"] else "sandbox://graph"
        )
        try:
            return media_upload(data, mime_type=mime_type, filename=filename, graph_url=graph_url)
        except MediaUploadError as exc:
            raise CommandError(str(exc)) from exc
