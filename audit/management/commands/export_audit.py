import io
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, TextIO, cast

from django.core.management.base import CommandError, CommandParser
from django.db import connections

from audit.csv_format import csv_write
from audit.erasure import database_coverage
from audit.jsonl import (
    integrity_fields,
    integrity_line,
    postgresql_seed_blocks,
    seed_fields,
    seed_fields_and_line,
)
from audit.management.filters import add_filter_arguments, filter_from_options
from audit.selectors import audit_events_filter
from audit.toolkit import StrictCommand, atomic_output

CHUNK = 2000
# Lines formatted with one map() and written with one call: far fewer Python calls than
# two writes per line. Larger batches only cost memory (docs/benchmarks.md).
LINES_PER_WRITE = 200
PROGRESS_EVERY = 10_000


class Command(StrictCommand):
    help = (
        "Export audit events as JSONL (one event per line, the seed guide's format) or, "
        "with --format csv, as CSV (a header row, then one row per event)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_filter_arguments(parser)
        parser.add_argument(
            "--output", "-o", type=Path, help="file to write atomically (default: stdout)"
        )
        parser.add_argument(
            "--with-integrity",
            action="store_true",
            help="append sequence, key fingerprint, context and hash-chain fields to each "
            "line (verify offline with `verify_audit --file`)",
        )
        parser.add_argument(
            "--format",
            choices=["jsonl", "csv"],
            default="jsonl",
            help="jsonl (default; what verify_audit reads) or csv (RFC 4180, full_response "
            "as JSON text)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        events = audit_events_filter(filter_from_options(options))
        self.with_integrity = options["with_integrity"]
        self.csv = options["format"] == "csv"
        output: Path | None = options["output"]
        if output is None or str(output) == "-":
            out = cast(TextIO, self.stdout._out)
            if out is sys.stdout and hasattr(out, "buffer"):
                # The export is UTF-8 whatever the terminal's locale says.
                utf8 = io.TextIOWrapper(out.buffer, encoding="utf-8", newline="\n")
                try:
                    self._write(events, utf8)
                    utf8.flush()
                except BrokenPipeError:
                    # The reader stopped reading (`export_audit | head`): stop without a
                    # traceback, non-zero as the export is incomplete. Standard output
                    # now goes nowhere, so flushing it again cannot fail (Python's
                    # documented recipe for SIGPIPE).
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                    raise SystemExit(1) from None
                finally:
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
        if self.csv:
            selected = integrity_fields() if self.with_integrity else seed_fields()
            rows = events.values_list(*selected).iterator(chunk_size=CHUNK)
            coverage = database_coverage() if self.with_integrity else None
            return csv_write(handle, rows, with_integrity=self.with_integrity, coverage=coverage)
        show_progress = self.stderr.isatty()
        total = events.count() if show_progress else 0
        count = 0
        for lines, text in self._blocks(events, handle):
            handle.write(text)
            shown = count // PROGRESS_EVERY
            count += lines
            if show_progress and count // PROGRESS_EVERY > shown:
                sys.stderr.write(f"\r{count}/{total} events")
        if show_progress and count >= PROGRESS_EVERY:
            sys.stderr.write("\n")
        return count

    def _blocks(self, events: Any, handle: TextIO) -> Iterator[tuple[int, str]]:
        """(number of lines, text) blocks of the export, in order."""
        if not self.with_integrity and connections[events.db].vendor == "postgresql":
            # PostgreSQL builds the seed lines itself and streams them with COPY; the
            # bytes go straight to a file's buffer (the text layer flushed first).
            buffer = getattr(handle, "buffer", None)
            for lines, block in postgresql_seed_blocks(events):
                if buffer is None:
                    yield lines, block.decode()
                else:
                    handle.flush()
                    buffer.write(block)
                    yield lines, ""
            return
        fields: tuple[Any, ...]
        line: Callable[[Sequence[Any]], str]
        if self.with_integrity:
            fields = integrity_fields()
            line = partial(integrity_line, coverage=database_coverage())
        else:
            fields, line = seed_fields_and_line(connections[events.db])
        # iterator(): a server-side cursor on PostgreSQL, chunked fetches on SQLite;
        # memory stays flat whatever the number of events.
        rows = events.values_list(*fields).iterator(chunk_size=CHUNK)
        while batch := list(islice(rows, LINES_PER_WRITE)):
            texts = list(map(line, batch))
            texts.append("")
            yield len(batch), "\n".join(texts)
