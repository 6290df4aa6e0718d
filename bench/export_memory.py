"""Wall time and peak memory of `manage.py export_audit --output` as the audit table grows
(10k, 100k, 1M events, up to --events), against the database's own fastest JSON dump of
the same rows (the sqlite3 shell, or psql COPY); the two files must hold the same bytes.
DATABASE_URL must name a scratch database: rows are inserted with raw SQL and never removed.

    DEBUG=true DATABASE_URL=sqlite:////tmp/bench.sqlite3 \\
        .venv/bin/python bench/export_memory.py --events 1000000

Results and method (and why peak RSS is read the way it is): docs/benchmarks.md.
"""

import argparse
import filecmp
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "multichannel.settings")

import benchkit  # noqa: E402
import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from audit.jsonl import SEED_KEYS  # noqa: E402
from audit.models import AuditBody, AuditEvent  # noqa: E402
from tests.support.audit_rows import chain_placeholders, insert_audit_rows  # noqa: E402

SIZES = (10_000, 100_000, 1_000_000)
BATCH = 10_000
START = datetime(2026, 3, 30, 19, 10, 14, tzinfo=UTC)

# A typical MKA1 response for one WhatsApp turn, as the audit row stores it (~1 KB).
FULL_RESPONSE = json.dumps(
    {
        "id": "resp_PLACEHOLDER",
        "object": "response",
        "created_at": 1774897814,
        "status": "completed",
        "model": "meetkai:functionary-pt",
        "conversation": {"id": "conv_PLACEHOLDER"},
        "previous_response_id": None,
        "output": [
            {
                "type": "message",
                "id": "msg_PLACEHOLDER",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {
                        "type": "output_text",
                        "text": "Mañana hará 21 °C en São Paulo, con cielo parcialmente "
                        "nublado por la tarde y poca probabilidad de lluvia. " * 4,
                        "annotations": [],
                    }
                ],
            }
        ],
        "temperature": 1.0,
        "top_p": 1.0,
        "usage": {
            "input_tokens": 318,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 164,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 482,
        },
        "metadata": {"channel": "whatsapp"},
    },
    ensure_ascii=False,
    separators=(",", ":"),
)


def sizes_up_to(largest: int) -> list[int]:
    return [size for size in SIZES if size < largest] + [largest]


def audit_event_count() -> int:
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {table}")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def insert_events(first: int, stop: int) -> None:
    """Rows first..stop-1: one per 10 ms, 1,000 end users, ten turns per conversation."""
    adapt = connection.ops.adapt_datetimefield_value

    def row(n: int) -> dict[str, Any]:
        resp, conv = f"resp_{n:08d}", f"conv_{n // 10:07d}"
        create = n % 2 == 0
        return {
            "timestamp": adapt(START + timedelta(milliseconds=10 * n)),
            "channel": "whatsapp" if create else "webapp",
            "action": "responses.create" if create else "responses.get",
            "end_user_id": str(n // 10 % 1000),
            "response_id": resp,
            "conversation_id": conv,
            "previous_response_id": f"resp_{n - 1:08d}" if create and n % 10 else None,
            "full_response": FULL_RESPONSE.replace("resp_PLACEHOLDER", resp)
            .replace("conv_PLACEHOLDER", conv)
            .replace("msg_PLACEHOLDER", f"msg_{n:08d}"),
            "api_key_fingerprint": "sha256:0123456789abcdef",
            "context": '{"wamid":"wamid.bench"}' if create else "{}",
            **chain_placeholders(n),
        }

    with transaction.atomic():
        insert_audit_rows(row, first, stop, batch=BATCH)


def settle() -> None:
    """Let PostgreSQL finish with the rows just inserted (hint bits, visibility map,
    statistics) before anything is timed: otherwise the first reader after the insert,
    whichever it is, pays for writing them."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for model in (AuditEvent, AuditBody):
                cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


def count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines


def export_once(output: Path) -> tuple[float, int]:
    """Run one export subprocess; return (wall seconds, peak RSS in KiB)."""
    return benchkit.measure(
        [sys.executable, str(ROOT / "manage.py"), "export_audit", "--output", str(output)]
    )


def column(name: str) -> str:
    """The events' column for a seed key (the events are `e`); `full_response` is the
    text of the event's body (`b`), NULL for an event without one."""
    if name == "full_response":
        return "b." + connection.ops.quote_name(AuditBody._meta.get_field("text").column)
    columns = {field.name: field.column for field in AuditEvent._meta.concrete_fields}
    return "e." + connection.ops.quote_name(columns[name])


def events_with_bodies() -> str:
    quote = connection.ops.quote_name
    body_id = quote(AuditEvent._meta.get_field("body").column)
    digest = quote(AuditBody._meta.pk.column)
    return (
        f"{quote(AuditEvent._meta.db_table)} e LEFT JOIN {quote(AuditBody._meta.db_table)} b "
        f"ON b.{digest} = e.{body_id}"
    )


def sqlite_dump_query() -> str:
    """One `json_object(...)` per event, the seed guide's keys in order."""
    pieces = []
    for key in SEED_KEYS:
        value = column(key)
        if key == "timestamp":  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC)
            value = f"strftime('%Y-%m-%dT%H:%M:%fZ', {value})"
        elif key == "full_response":
            value = f"json({value})"
        pieces.append(f"'{key}', {value}")
    return (
        f"SELECT json_object({', '.join(pieces)}) FROM {events_with_bodies()} "
        f"ORDER BY {column('sequence')}"
    )


def postgres_dump_query() -> str:
    """`COPY ... TO STDOUT` of one `row_to_json` per event, the seed guide's keys in order.
    CSV with control characters as quote and delimiter: text-format COPY would double
    every backslash in the JSON."""
    pieces = []
    for key in SEED_KEYS:
        value = column(key)
        if key == "timestamp":
            value = f"""to_char({value} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""
        elif key == "full_response":
            value = f"{value}::json"
        pieces.append(f'{value} AS "{key}"')
    inner = f"SELECT {', '.join(pieces)} FROM {events_with_bodies()} ORDER BY {column('sequence')}"
    return (
        f"COPY (SELECT row_to_json(t) FROM ({inner}) t) TO STDOUT "
        "WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
    )


# Without psql: the same COPY through psycopg, in a process that imports nothing else.
PSYCOPG_COPY = """
import sys, psycopg
out = sys.stdout.buffer
with psycopg.connect() as db, db.cursor().copy(sys.argv[1]) as copy:
    for block in copy:
        out.write(block)
"""


def dump_command() -> tuple[str, list[str], dict[str, str]]:
    """(how, command, environment) for the database's own JSON dump of the audit table."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        sqlite = shutil.which("sqlite3")
        if sqlite is None:
            raise SystemExit("the sqlite3 shell is missing: apt-get install sqlite3")
        command = [sqlite, "-readonly", "-batch", str(db["NAME"]), sqlite_dump_query()]
        return "sqlite3 json_object", command, dict(os.environ)
    if connection.vendor != "postgresql":
        raise SystemExit(f"no JSON dump for {connection.vendor}")
    env = dict(os.environ)
    for key, name in (
        ("PGHOST", "HOST"),
        ("PGPORT", "PORT"),
        ("PGUSER", "USER"),
        ("PGPASSWORD", "PASSWORD"),
        ("PGDATABASE", "NAME"),
    ):
        if db.get(name):
            env[key] = str(db[name])
    psql = shutil.which("psql")
    if psql is not None:
        return "psql COPY row_to_json", [psql, "-X", "-q", "-c", postgres_dump_query()], env
    return (
        "psycopg copy row_to_json (no psql: apt-get install postgresql-client)",
        [sys.executable, "-c", PSYCOPG_COPY, postgres_dump_query()],
        env,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="largest table size")
    parser.add_argument(
        "--repeat", type=int, default=3, help="export and dump this many times each (median)"
    )
    args = parser.parse_args()
    if args.events < 1:
        parser.error("--events must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    call_command("migrate", verbosity=0)
    if audit_event_count():
        raise SystemExit(
            "the audit table is not empty: point DATABASE_URL at a fresh scratch database "
            "(this script inserts rows it never removes)"
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sqlite_version()" if connection.vendor == "sqlite" else "SHOW server_version"
        )
        row = cursor.fetchone()
    server = f"{connection.vendor} {row[0] if row else '?'}"
    print(f"python {platform.python_version()}, {server}, {os.cpu_count()} CPUs")
    how, dump, dump_env = dump_command()
    print(f"full_response {len(FULL_RESPONSE.encode())} bytes per event; dump: {how}")
    print()
    header = (
        "| events | insert s | export wall s | events/s | peak RSS MiB | output MiB "
        "| dump wall s | dump events/s | dump MiB | export / dump | same bytes |"
    )
    print(header)
    print("|" + "---:|" * (header.count("|") - 1))

    with tempfile.TemporaryDirectory(prefix="export-bench-") as scratch:
        output = Path(scratch) / "audit.jsonl"
        dumped = Path(scratch) / "dump.jsonl"
        have = 0
        for size in [0, *sizes_up_to(args.events)]:
            started = time.perf_counter()
            insert_events(have, size)
            inserted = time.perf_counter() - started
            have = size
            settle()
            # Export and dump take turns, so neither always runs on a colder cache.
            exports: list[tuple[float, int]] = []
            dumps: list[float] = []
            for _ in range(args.repeat):
                exports.append(export_once(output))
                lines = count_lines(output)
                if lines != size:
                    raise SystemExit(f"exported {lines} lines for {size} events")
                dumps.append(benchkit.measure(dump, stdout=dumped, env=dump_env)[0])
                lines = count_lines(dumped)
                if lines != size:
                    raise SystemExit(f"the dump wrote {lines} lines for {size} events")
            elapsed = statistics.median(wall for wall, _ in exports)
            peak_kib = max(peak for _, peak in exports)
            dump_elapsed = statistics.median(dumps)
            same = "yes" if filecmp.cmp(output, dumped, shallow=False) else "no"
            rate = f"{size / elapsed:,.0f}" if size else "-"
            dump_rate = f"{size / dump_elapsed:,.0f}" if size else "-"
            ratio = f"{elapsed / dump_elapsed:.2f}x" if size else "-"
            print(
                f"| {size:,} | {inserted:.1f} | {elapsed:.1f} | {rate} | "
                f"{peak_kib / 1024:.1f} | {output.stat().st_size / 2**20:.1f} | "
                f"{dump_elapsed:.2f} | {dump_rate} | {dumped.stat().st_size / 2**20:.1f} | "
                f"{ratio} | {same} |",
                flush=True,
            )
            output.unlink()
            dumped.unlink()

    print()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
