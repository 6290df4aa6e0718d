from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from audit.toolkit import StrictCommand
from audit.verification import ExportFormatError, verify_database, verify_file


class Command(StrictCommand):
    help = (
        "Re-walk the audit hash chain and report OK or the first bad sequence number and "
        "why (changed, missing, reordered). With --file, check an export offline."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--file", type=Path, help="a JSONL file from `export_audit --with-integrity`"
        )
        parser.add_argument(
            "--partial",
            action="store_true",
            help="the file is a filtered export: gaps in the sequence are expected",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path | None = options["file"]
        if options["partial"] and path is None:
            raise CommandError("--partial only applies to --file")
        if path is None:
            verdict = verify_database()
        else:
            try:
                with path.open(encoding="utf-8") as handle:
                    verdict = verify_file(handle, contiguous=not options["partial"])
            except OSError as exc:
                raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc
            except (ExportFormatError, UnicodeDecodeError) as exc:
                raise CommandError(f"{path}: {exc}") from exc
        if not verdict.ok:
            raise CommandError(verdict.describe())
        self.stdout.write(verdict.describe())
