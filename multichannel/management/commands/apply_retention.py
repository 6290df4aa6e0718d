from typing import Any

from django.core.management.base import CommandError, CommandParser

from audit.toolkit import StrictCommand
from multichannel.privacy import PrivacyError, retention_run


class Command(StrictCommand):
    help = (
        "Remove content older than CONTENT_RETENTION_DAYS (or --days) now, as the daily "
        "task does: ledger bodies and contexts, messages, replies, transcripts, media, raw "
        "payloads. Never under a legal hold, never younger than MIN_RETENTION_DAYS. The run "
        "is recorded as a `retention` audit event first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, help="instead of CONTENT_RETENTION_DAYS")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            removed = retention_run(days=options["days"])
        except PrivacyError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Retention: content before {removed.pop('cutoff')} removed (audit event "
            f"{removed.pop('audit_sequence')}): "
            + ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in removed.items())
            + "."
        )
