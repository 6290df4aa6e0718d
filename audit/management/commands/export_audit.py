import io
import sys
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, TextIO, cast

from django.core.management.base import CommandError, CommandParser
from django.db import connections

from audit.jsonl import INTEGRITY_FIELDS, integrity_line, seed_fields, seed_fields_and_line
from audit.selectors import AuditFilter, audit_events_filter
from audit.toolkit import StrictCommand, atomic_output, non_empty, utc_datetime

CHUNK = 2000
# Lines formatted with one map() and written with one call: far fewer Python calls than
# two writes per line. Larger batches only cost memory (docs/benchmarks.md).
LINES_PER_WRITE = 200
PROGRESS_EVERY = 10_000


class Command(StrictCommand):
    help = "Export audit events as JSONL (one event per line, the seed guide's format)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", type=utc_datetime, help="events at or after (ISO 8601, UTC)")
        parser.add_argument("--until", type=utc_datetime, help="events before (ISO 8601, UTC)")
        parser.add_argument(
            "--end-user", type=non_empty, help="only this end user id (X-On-Behalf-Of)"
        )
        parser.add_argument("--conversation", type=non_empty, help="only this MKA1 conversation id")
        parser.add_argument("--response", type=non_empty, help="only this MKA1 response id")
        parser.add_argument("--channel", choices=["whatsapp", "webapp"])
        parser.add_argument("--action", type=non_empty, help="e.g. responses.create, responses.get")
        parser.add_argument(
            "--output", "-o", type=Path, help="file to write atomically (default: stdout)"
        )
        parser.add_argument(
            "--with-integrity",
            action="store_true",
            help="append sequence, key fingerprint, context and hash-chain fields to each "
            "line (verify offline with `verify_audit --file`)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        since, until = options["since"], options["until"]
        if since and until and since >= until:
            raise CommandError("--since must be before --until")
        criteria = AuditFilter(
            since=since,
            until=until,
            end_user_id=options["end_user"],
            conversation_id=options["conversation"],
            response_id=options["response"],
            channel=options["channel"],
            action=options["action"],
        )
        events = audit_events_filter(criteria)
        self.with_integrity = options["with_integrity"]
        output: Path | None = options["output"]
        if output is None or str(output) == "-":
            out = cast(TextIO, self.stdout._out)
            if out is sys.stdout and hasattr(out, "buffer"):
                # JSONL is UTF-8 whatever the terminal's locale says.
                utf8 = io.TextIOWrapper(out.buffer, encoding="utf-8", newline="\n")
                try:
                    self._write(events, utf8)
                finally:
                    utf8.flush()
                    utf8.detach()
            else:
                self._write(events, out)
            return
        try:
            with atomic_output(output) as handle:
                count = self._write(events, handle)
        except OSError as exc:
            raise CommandError(f"cannot write {output}: {exc.strerror or exc}") from exc
        self.stderr.write(f"exported {count} events to {output}")

    def _write(self, events: Any, handle: TextIO) -> int:
        show_progress = self.stderr.isatty()
        total = events.count() if show_progress else 0
        count = 0
        fields: tuple[Any, ...]
        line: Callable[[Sequence[Any]], str]
        if self.with_integrity:
            fields, line = (*seed_fields(), *INTEGRITY_FIELDS), integrity_line
        else:
            fields, line = seed_fields_and_line(connections[events.db])
        # iterator(): a server-side cursor on PostgreSQL, chunked fetches on SQLite;
        # memory stays flat whatever the number of events.
        rows = events.values_list(*fields).iterator(chunk_size=CHUNK)
        while batch := list(islice(rows, LINES_PER_WRITE)):
            lines = list(map(line, batch))
            lines.append("")
            handle.write("\n".join(lines))
            shown = count // PROGRESS_EVERY
            count += len(batch)
            if show_progress and count // PROGRESS_EVERY > shown:
                sys.stderr.write(f"\r{count}/{total} events")
        if show_progress and count >= PROGRESS_EVERY:
            sys.stderr.write("\n")
        return count
