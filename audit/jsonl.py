"""The audit JSONL format: one event per line, keys in the seed guide's order."""

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

from django.conf import settings
from django.db import NotSupportedError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F, Field, Func, QuerySet, TextField, Value
from django.db.models.functions import Coalesce
from django.db.models.sql.compiler import SQLCompiler

from audit.erasure import Coverage, erased_shape
from audit.integrity import canonical_context, format_timestamp
from audit.models import AuditEvent

SEED_KEYS = (
    "timestamp",
    "channel",
    "action",
    "end_user_id",
    "response_id",
    "conversation_id",
    "previous_response_id",
    "full_response",
)


def full_response_field() -> Coalesce:
    """What to select for `full_response`: the stored body's text, or JSON `null` for an
    event without one (or whose body was erased)."""
    return Coalesce(F("body__text"), Value("null"), output_field=TextField())


# What `values_list` selects for each of SEED_KEYS, in order.
def seed_fields() -> tuple[Any, ...]:
    return (*SEED_KEYS[:-1], full_response_field())


def format_utc_wall_clock(moment: datetime) -> str:
    """format_timestamp for a naive datetime that is UTC wall-clock time (what
    `UtcTimestamp` selects); an aware one is converted as usual."""
    if moment.tzinfo is None:
        if moment.year >= 1000:
            return moment.isoformat(timespec="milliseconds") + "Z"
        moment = moment.replace(tzinfo=UTC)
    return format_timestamp(moment)


# One encoder for every field: json.dumps(..., ensure_ascii=False) builds a new encoder
# per call, which is most of the cost of a line on a million-event export.
_value = json.JSONEncoder(ensure_ascii=False).encode


# The seed guide's keys, in order; each is also the AuditEvent field it comes from.
_LINE = (
    '{"timestamp":%s,"channel":%s,"action":%s,"end_user_id":%s,"response_id":%s,'
    '"conversation_id":%s,"previous_response_id":%s,"full_response":%s}'
)


def values_line(values: Sequence[Any]) -> str:
    """One JSONL line (without the newline) from the fields named in SEED_KEYS, in that
    order, as `values_list(*seed_fields())` gives them: exporting plain rows rather than
    model instances halves the cost of a large export. `full_response` is already
    compact JSON text in the row, so it is spliced in as-is rather than re-dumped."""
    return _line(format_timestamp(values[0]), values)


def utc_values_line(values: Sequence[Any]) -> str:
    """values_line for rows selected with `utc_seed_fields()`: the timestamp is naive UTC
    wall-clock time. The line is the same text values_line writes for the event."""
    return _line(format_utc_wall_clock(values[0]), values)


def _line(timestamp: str, values: Sequence[Any]) -> str:
    _, channel, action, end_user_id, response_id, conversation_id, previous, full = values
    try:
        # The string fields straight through the C escaper: JSONEncoder.encode() does
        # exactly this for a str, after a Python call and an isinstance check per field.
        # A formatted timestamp has nothing to escape.
        return _LINE % (
            '"' + timestamp + '"',
            encode_basestring(channel),
            encode_basestring(action),
            encode_basestring(end_user_id),
            "null" if response_id is None else encode_basestring(response_id),
            "null" if conversation_id is None else encode_basestring(conversation_id),
            "null" if previous is None else encode_basestring(previous),
            full,
        )
    except TypeError:  # a value that is not a string (or None): the general encoder
        return _LINE % (
            _value(timestamp),
            _value(channel),
            _value(action),
            _value(end_user_id),
            _value(response_id),
            _value(conversation_id),
            _value(previous),
            full,
        )


class UtcTimestamp(Func):
    """The event's timestamp as naive UTC wall-clock time, decoded by the database driver
    alone. On PostgreSQL `AT TIME ZONE 'UTC'` makes it a plain `timestamp`, which
    psycopg's C loader reads (Django's loader for `timestamptz` is Python code, and was
    about two thirds of the export's fetch time); on SQLite the column already holds UTC
    wall-clock text (see `utc_wall_clock_selectable`) and the untyped output field skips
    Django's per-row make_aware converter (half of the fetch time there). Format it
    with `format_utc_wall_clock`."""

    template = "%(expressions)s"
    arity = 1
    output_field = Field()

    def __init__(self) -> None:
        super().__init__("timestamp")

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> Any:
        return self.as_sql(
            compiler, connection, template="(%(expressions)s AT TIME ZONE 'UTC')", **extra_context
        )


def utc_wall_clock_selectable(connection: BaseDatabaseWrapper) -> bool:
    """Whether `UtcTimestamp` selects UTC wall-clock time on this connection: always on
    PostgreSQL; on SQLite when Django stores naive UTC there (USE_TZ with the
    connection's time zone UTC, the default)."""
    if not settings.USE_TZ:
        return False
    if connection.vendor == "postgresql":
        return True
    return connection.vendor == "sqlite" and connection.timezone_name == "UTC"


# What to select for utc_values_line (when utc_wall_clock_selectable).
def utc_seed_fields() -> tuple[Any, ...]:
    return (UtcTimestamp(), *seed_fields()[1:])


def seed_fields_and_line(
    connection: BaseDatabaseWrapper,
) -> tuple[tuple[Any, ...], Callable[[Sequence[Any]], str]]:
    """What to select with `values_list` on this connection, and the function that
    turns each row into its seed line: the fastest pair that writes the same text."""
    if utc_wall_clock_selectable(connection):
        return utc_seed_fields(), utc_values_line
    return seed_fields(), values_line


class SeedLine(Func):
    """The whole seed line (without the newline), built by PostgreSQL itself: the same
    text `values_line` writes. `to_json(text)` escapes exactly as Python's
    `ensure_ascii=False` encoder does (`\\"`, `\\\\`, `\\b \\f \\n \\r \\t`, other
    control characters as lower-case `\\u00xx`, everything else as is); the timestamp
    is cut to milliseconds like `format_timestamp`, the year unpadded below 1000 like
    glibc's `%Y` (`FMYYYY`); `full_response` is the stored compact JSON, spliced in."""

    output_field = TextField()

    def __init__(self) -> None:
        super().__init__(*(F(key) for key in SEED_KEYS[:-1]), full_response_field())

    def as_sql(self, *args: Any, **kwargs: Any) -> Any:
        raise NotSupportedError("SeedLine is built by PostgreSQL only")

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, list[Any]]:
        parts: list[str] = []
        params: list[Any] = []
        for expression in self.get_source_expressions():
            sql, expression_params = compiler.compile(expression)
            parts.append(sql)
            params.extend(expression_params)
        timestamp, *strings, full_response = parts
        pieces = [f"to_char({timestamp} AT TIME ZONE 'UTC', 'FMYYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"]
        # channel, action and end_user_id are never NULL; to_json(NULL) is NULL.
        pieces += [f"COALESCE(to_json({sql})::text, 'null')" for sql in strings]
        pieces.append(full_response)
        keys = [f'"{key}":' for key in SEED_KEYS]
        keys[0] = '{"timestamp":"'
        keys[1] = '","channel":'
        joined = " || ".join(
            f"'{',' if n > 1 else ''}{key}' || {piece}"
            for n, (key, piece) in enumerate(zip(keys, pieces, strict=True))
        )
        return f"({joined} || '}}')", params


# COPY's CSV mode writes a one-column row as is (text mode would double every backslash
# in the JSON) unless it holds the quote or delimiter character, CR or LF, none of which
# a JSON line holds raw; should one ever, the row is unquoted below.
_COPY_OPTIONS = "(FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
_QUOTE = b"\x01"
ROWS_PER_BLOCK = 1000


def postgresql_seed_blocks(events: QuerySet[AuditEvent]) -> Iterator[tuple[int, bytes]]:
    """The seed lines of `events` as (number of lines, UTF-8 bytes) blocks, streamed by
    PostgreSQL's COPY: the database builds each line (`SeedLine`) and Python only
    writes the blocks, so an export takes about as long as the database's own JSON dump
    (docs/benchmarks.md). The bytes are those of `values_line` for the same rows."""
    query = events.values_list(SeedLine()).query
    sql, params = query.get_compiler(events.db).as_sql()
    statement = f"COPY ({sql}) TO STDOUT {_COPY_OPTIONS}"
    with connections[events.db].cursor() as cursor, cursor.cursor.copy(statement, params) as copy:
        rows: list[Any] = []
        for row in copy:
            rows.append(row)
            if len(rows) == ROWS_PER_BLOCK:
                yield len(rows), _copy_block(rows)
                rows = []
        if rows:
            yield len(rows), _copy_block(rows)


def _copy_block(rows: list[Any]) -> bytes:
    block = b"".join(rows)
    if _QUOTE not in block:
        return block
    return b"".join(
        bytes(row)[1:-2].replace(_QUOTE * 2, _QUOTE) + b"\n" if row[:1] == _QUOTE else row
        for row in rows
    )


def event_line(event: AuditEvent) -> str:
    """One JSONL line (without the newline)."""
    return values_line([getattr(event, key) for key in SEED_KEYS])


def event_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    for event in events:
        yield event_line(event) + "\n"


# `export_audit --with-integrity` appends these after the seed's eight keys.
INTEGRITY_FIELDS = (
    "sequence",
    "api_key_fingerprint",
    "context",
    "content_digest",
    "previous_hash",
    "hash",
)
# ... and this one, only on the line of an event whose content was erased: the sequence
# of the erasure or retention event that erased it (audit/erasure.py). Its
# `full_response` is null, its context `{}`, and its content digest can only be taken
# as stored ("digest-only").
ERASED_KEY = "erased_by"
_INTEGRITY = (
    ',"sequence":%d,"api_key_fingerprint":%s,"context":%s,'
    '"content_digest":%s,"previous_hash":%s,"hash":%s'
)


def integrity_fields() -> tuple[Any, ...]:
    """What to select with `values_list` for `integrity_line`."""
    return (*seed_fields(), *INTEGRITY_FIELDS, "body_id")


def integrity_line(values: Sequence[Any], coverage: Coverage | None = None) -> str:
    """A seed-format line with the integrity fields appended, from
    `values_list(*integrity_fields())`. The context is written in the canonical form
    the digest covers (sorted keys). With the ledger's `coverage`, an erased event's
    line says which event erased it."""
    seed, extra = values[: len(SEED_KEYS)], values[len(SEED_KEYS) :]
    sequence, fingerprint, context, digest, previous_hash, link, body_id = extra
    erased_by = None
    if coverage is not None and body_id is None and erased_shape(context, seed[-1]):
        erased_by = coverage.covering(
            sequence=sequence, end_user_id=seed[3], timestamp=format_timestamp(seed[0])
        )
    return (
        values_line(seed)[:-1]
        + _INTEGRITY
        % (
            sequence,
            _value(fingerprint),
            canonical_context(context),
            _value(digest),
            _value(previous_hash),
            _value(link),
        )
        + (f',"{ERASED_KEY}":{erased_by}}}' if erased_by is not None else "}")
    )
