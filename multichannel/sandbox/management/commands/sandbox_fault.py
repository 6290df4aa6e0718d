"""Plan sandbox misbehaviour from a shell, so a benchmark or an operator can make the
web server and the worker (other processes) see failures and delays."""

import argparse
import re
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from audit.toolkit import StrictCommand
from multichannel.sandbox.faults import TRUNCATABLE, fault_inject, faults_clear

# Endpoint names as the sandbox views take faults: "responses.create", "graph.messages"...
ENDPOINT_RE = re.compile(r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*)$")


def endpoint_name(value: str) -> str:
    if not ENDPOINT_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an endpoint name (e.g. responses.create, or * for all)"
        )
    return value


def http_status(value: str) -> int:
    try:
        status = int(value)
    except ValueError:
        status = 0
    if not 100 <= status <= 599:
        raise argparse.ArgumentTypeError(f"{value!r} is not an HTTP status (100-599)")
    return status


def non_negative_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of 0 or more")
    return number


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of 1 or more")
    return number


class Command(StrictCommand):
    help = (
        "Make the next calls to a sandbox endpoint fail and/or wait (e.g. "
        "'sandbox_fault responses.create --status 503 --times 2'), cut media downloads "
        "short ('sandbox_fault graph.media.download --truncate'), or --clear every plan."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "endpoint",
            nargs="?",
            type=endpoint_name,
            help="responses.create, responses.get, responses.delete, conversations.create, "
            "conversations.get, conversations.delete, conversations.items.list, "
            "conversations.items.get, conversations.items.delete, speech.transcriptions, "
            "speech.transcriptions.history.list, speech.transcriptions.history.delete, "
            "files.create, files.get, files.delete, feedback.create, graph.messages, "
            "graph.media.upload, graph.media, graph.media.download, or * for all",
        )
        parser.add_argument("--status", type=http_status, help="answer with this HTTP status")
        parser.add_argument(
            "--delay-ms", type=non_negative_int, default=0, help="wait this long first"
        )
        parser.add_argument(
            "--times", type=positive_int, default=1, help="how many calls (default 1)"
        )
        parser.add_argument(
            "--retry-after",
            type=positive_int,
            help="send a Retry-After header of this many seconds (with a 429 or 503, say)",
        )
        parser.add_argument(
            "--truncate",
            action="store_true",
            help=f"{TRUNCATABLE} only: send the full Content-Length but half the body, "
            "then drop the connection",
        )
        parser.add_argument("--clear", action="store_true", help="forget every planned fault")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.SANDBOX:
            raise CommandError("SANDBOX is off: there is no sandbox to plan faults for.")
        endpoint: str | None = options["endpoint"]
        status: int | None = options["status"]
        delay_ms: int = options["delay_ms"]
        times: int = options["times"]
        retry_after: int | None = options["retry_after"]
        truncate: bool = options["truncate"]
        if options["clear"]:
            if (
                endpoint is not None
                or status is not None
                or delay_ms
                or times != 1
                or retry_after
                or truncate
            ):
                raise CommandError("--clear takes no endpoint or other options")
            cleared = faults_clear()
            self.stdout.write(f"Cleared {cleared} planned fault{'' if cleared == 1 else 's'}.")
            return
        if endpoint is None:
            raise CommandError("give an endpoint (e.g. responses.create, or * for all) or --clear")
        if truncate:
            if endpoint != TRUNCATABLE:
                raise CommandError(f"--truncate is for {TRUNCATABLE} only")
            if status is not None or retry_after is not None:
                raise CommandError("--truncate answers 200; it takes no --status or --retry-after")
        elif status is None and not delay_ms:
            raise CommandError("give --status, --delay-ms, or both")
        if status is not None and 200 <= status < 300:
            # A planned success would need a body to answer with; that is for tests only.
            raise CommandError("--status must be an error status (not 2xx)")
        if retry_after is not None and status is None:
            raise CommandError("--retry-after goes with an error --status")
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        fault_inject(
            endpoint,
            status=status,
            delay_ms=delay_ms,
            times=times,
            headers=headers,
            truncate=truncate,
        )
        calls = "the next call" if times == 1 else f"the next {times} calls"
        target = "any sandbox endpoint" if endpoint == "*" else endpoint
        if truncate:
            effect = "send only part of the body, then drop the connection"
        elif status is not None:
            effect = f"answer HTTP {status}"
        else:
            effect = "answer normally"
        if retry_after is not None:
            effect += f" with Retry-After: {retry_after}"
        if delay_ms:
            effect = f"wait {delay_ms} ms, then {effect}"
        self.stdout.write(f"Planned: {calls} to {target} will {effect}.")
