"""Wall time and peak memory of `manage.py export_audit --output` as the audit table grows.

    DEBUG=true DATABASE_URL=sqlite:////tmp/bench.sqlite3 \\
        .venv/bin/python bench/export_memory.py --events 1000000

Migrates the database named by DATABASE_URL, grows its audit table to each size in turn
(10k, 100k, 1M, up to --events) and, at each size, exports every event with one
`export_audit --output` subprocess, reporting its wall time and peak RSS. A flat RSS
column is the point: the export streams rows instead of loading them.

The database must be a scratch one with no audit events in it: the rows are inserted
with raw SQL (the ORM refuses bulk writes to the ledger on purpose) and never removed.

Peak RSS is `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`, read by a small helper
process that runs only the export. Two traps make the obvious ways wrong: RUSAGE_CHILDREN
is the largest over every child reaped so far (one early export would hide the later
ones), and a child's ru_maxrss also counts the parent's memory at fork time, which
survives exec (this script's own RSS, swollen by the inserts, showed up as the
export's). The helper is fresh for each export and imports nothing but the standard
library, so its RUSAGE_CHILDREN figure is the export's own.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "multichannel.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from audit.models import AuditEvent  # noqa: E402
from tests.audit_rows import chain_placeholders, insert_audit_rows  # noqa: E402

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


def count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines


# Runs argv[1:], then prints its wall seconds, peak RSS (KiB) and exit status as JSON.
MEASURE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
status = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(json.dumps([
    time.perf_counter() - started,
    resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    status,
]))
"""


def export_once(output: Path) -> tuple[float, int]:
    """Run one export subprocess; return (wall seconds, peak RSS in KiB)."""
    export = [sys.executable, str(ROOT / "manage.py"), "export_audit", "--output", str(output)]
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, *export],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise SystemExit(f"measuring failed: {result.stderr}")
    elapsed, peak_kib, status = json.loads(result.stdout)
    if status:
        raise SystemExit(f"export failed ({status}): {result.stderr}")
    return float(elapsed), int(peak_kib)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="largest table size")
    args = parser.parse_args()
    if args.events < 1:
        parser.error("--events must be at least 1")

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
    print(f"full_response {len(FULL_RESPONSE.encode())} bytes per event")
    print()
    print("| events | insert s | export wall s | events/s | peak RSS MiB | output MiB |")
    print("|---:|---:|---:|---:|---:|---:|")

    with tempfile.TemporaryDirectory(prefix="export-bench-") as scratch:
        output = Path(scratch) / "audit.jsonl"
        have = 0
        for size in [0, *sizes_up_to(args.events)]:
            started = time.perf_counter()
            insert_events(have, size)
            inserted = time.perf_counter() - started
            have = size
            elapsed, peak_kib = export_once(output)
            lines = count_lines(output)
            if lines != size:
                raise SystemExit(f"exported {lines} lines for {size} events")
            rate = f"{size / elapsed:,.0f}" if size else "-"
            print(
                f"| {size:,} | {inserted:.1f} | {elapsed:.1f} | {rate} | "
                f"{peak_kib / 1024:.1f} | {output.stat().st_size / 2**20:.1f} |",
                flush=True,
            )
            output.unlink()

    print()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
