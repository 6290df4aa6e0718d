"""Signing a checkpoint and proving one event at a million events (wall time, peak RSS),
on SQLite or PostgreSQL; every root and proof is checked against one recomputed here.

    .venv/bin/python bench/checkpoint.py --db sqlite   --events 1000000
    .venv/bin/python bench/checkpoint.py --db postgres --events 1000000

Results and method: docs/benchmarks.md.
"""

import argparse
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchkit  # noqa: E402

from audit.notes import generate_key  # noqa: E402  (no Django needed)
from tests.support.stack import postgres_database  # noqa: E402

START = 1_774_897_814  # 2026-03-30T19:10:14Z


def configure(database_url: str, scratch: Path) -> dict[str, str]:
    key = generate_key("bench.example/audit")
    (scratch / "signing.key").write_text(key.text + "\n")
    (scratch / "public.key").write_text(key.verifier.text + "\n")
    # DEBUG off (benchkit.django_env): with it on, Django keeps the last 9,000 queries'
    # SQL in memory, tiles' bytes included, which is the benchmark's RSS, not the
    # checkpoint's.
    return benchkit.django_env(
        database_url, scratch, AUDIT_SIGNING_KEY=str(scratch / "signing.key")
    )


def insert_chain(first: int, stop: int, previous: str) -> str:
    """Events first+1..stop with valid links; returns the last hash."""
    from datetime import UTC, datetime, timedelta

    from django.db import connection, transaction

    from audit.integrity import chain_hash, content_digest, format_timestamp
    from audit.models import AuditChainHead
    from tests.support.audit_rows import insert_audit_rows

    adapt = connection.ops.adapt_datetimefield_value
    start = datetime.fromtimestamp(START, UTC)
    state = {"previous": previous}

    def row(n: int) -> dict[str, Any]:
        sequence = n + 1
        moment = start + timedelta(milliseconds=10 * n)
        content: dict[str, Any] = {
            "channel": "whatsapp",
            "action": "responses.create",
            "end_user_id": str(n % 1000),
            "response_id": f"resp_{sequence:08d}",
            "conversation_id": f"conv_{n // 10:07d}",
            "previous_response_id": None,
            "api_key_fingerprint": "sha256:0123456789abcdef",
        }
        digest = content_digest(
            timestamp=format_timestamp(moment), full_response="null", context={}, **content
        )
        link = chain_hash(sequence=sequence, previous_hash=state["previous"], digest=digest)
        values = {
            **content,
            "sequence": sequence,
            "timestamp": adapt(moment),
            "context": "{}",
            "content_digest": digest,
            "previous_hash": state["previous"],
            "hash": link,
        }
        state["previous"] = link
        return values

    with transaction.atomic():
        insert_audit_rows(row, first, stop, batch=10_000)
        head = AuditChainHead.objects.filter(pk=1)
        if head.exists():
            head.update(sequence=stop, hash=state["previous"])
        else:
            AuditChainHead.objects.create(pk=1, sequence=stop, hash=state["previous"])
    return state["previous"]


def streamed_root(size: int) -> bytes:
    from audit import merkle
    from audit.selectors import chain_links

    builder = merkle.RootBuilder()
    for sequence, digest, _, _ in chain_links(after=0, upto=size, chunk=20_000):
        builder.push(merkle.event_leaf_hash(sequence, digest))
    return builder.root()


def manage(env: dict[str, str], *args: str, stdout: Path | None = None) -> tuple[float, int]:
    return benchkit.measure([sys.executable, str(ROOT / "manage.py"), *args], stdout, env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--more", type=int, default=10_000, help="events added before the second checkpoint"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    print(benchkit.machine_facts())
    with ExitStack() as cleanup:
        scratch = cleanup.enter_context(benchkit.scratch("bench-checkpoint-", keep=args.keep))
        database_url = (
            cleanup.enter_context(postgres_database("bench_checkpoint"))
            if args.db == "postgres"
            else f"sqlite:///{scratch / 'bench.sqlite3'}"
        )
        return run(args, configure(database_url, scratch), scratch)


def run(args: argparse.Namespace, env: dict[str, str], scratch: Path) -> int:
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from audit import merkle
    from audit.models import AuditCheckpoint, AuditEvent, AuditTreeTile
    from audit.notes import parse_checkpoint
    from audit.tree import TileReader

    rows: list[tuple[str, int, float, float, str]] = []
    failures: list[str] = []
    try:
        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        last = insert_chain(0, args.events, "0" * 64)
        print(f"inserted {args.events:,} events in {time.perf_counter() - started:.1f} s")

        wall, peak = manage(env, "check")
        rows.append(("start-up (manage.py check)", 0, wall, peak / 1024, ""))

        out = scratch / "checkpoint1.txt"
        wall, peak = manage(env, "audit_checkpoint", stdout=out)
        first = AuditCheckpoint.objects.get(size=args.events)
        expected = streamed_root(args.events)
        ok = (
            bytes.fromhex(first.root_hash)
            == expected
            == parse_checkpoint(out.read_text().split("\n\n")[0] + "\n").root
        )
        failures += [] if ok else ["the first checkpoint's root is not the streamed root"]
        tiles = AuditTreeTile.objects.count()
        rows.append(
            ("audit_checkpoint, first (all events)", args.events, wall, peak / 1024,
             f"root matches streamed root: {ok}; {tiles:,} tile rows")
        )  # fmt: skip

        middle = args.events // 2 + 1
        proof = scratch / "proof.json"
        wall, peak = manage(
            env, "audit_proof", "--response", f"resp_{middle:08d}", "-o", str(proof)
        )
        rows.append(
            ("audit_proof, one event", args.events, wall, peak / 1024, f"sequence {middle}")
        )
        wall, peak = manage(
            env, "verify_audit", "--proof", str(proof), "--pubkey", str(scratch / "public.key")
        )
        rows.append(("verify_audit --proof", args.events, wall, peak / 1024, "OK"))
        wall, peak = manage(
            env, "verify_audit", "--checkpoint", str(out), "--pubkey", str(scratch / "public.key")
        )
        rows.append(
            ("verify_audit --checkpoint (database)", args.events, wall, peak / 1024,
             "every digest recomputed, root compared")
        )  # fmt: skip
        reader = TileReader()
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            path = reader.inclusion_proof(middle - 1, args.events)
            took = (time.perf_counter() - started) * 1000
        digest = AuditEvent.objects.get(sequence=middle).content_digest
        leaf = merkle.event_leaf_hash(middle, digest)
        if not merkle.verify_inclusion(middle - 1, args.events, leaf, path, expected):
            failures.append("the in-process inclusion proof does not verify")
        rows.append(
            ("inclusion proof alone, in-process", args.events, took / 1000, 0,
             f"{len(path)} hashes, {len(queries)} tile reads")
        )  # fmt: skip

        insert_chain(args.events, args.events + args.more, last)
        out2 = scratch / "checkpoint2.txt"
        wall, peak = manage(env, "audit_checkpoint", stdout=out2)
        second = AuditCheckpoint.objects.get(size=args.events + args.more)
        consistent = merkle.verify_consistency(
            first.size,
            second.size,
            bytes.fromhex(first.root_hash),
            bytes.fromhex(second.root_hash),
            TileReader().consistency_proof(first.size, second.size),
        )
        failures += [] if consistent else ["the second checkpoint does not extend the first"]
        rows.append(
            (f"audit_checkpoint, +{args.more:,} events", args.events + args.more, wall,
             peak / 1024, f"consistent with the first: {consistent}")
        )  # fmt: skip
        size = AuditTreeTile.objects.values_list("hashes", flat=True)
        stored = sum(len(bytes(h)) for h in size.iterator(chunk_size=1000))
        print(f"tiles: {AuditTreeTile.objects.count():,} rows, {stored / 2**20:.1f} MiB of hashes")
    finally:
        benchkit.django_connections_close()
    print()
    print(f"| {args.db} | events | wall s | peak RSS MiB | notes |")
    print("|---|---:|---:|---:|---|")
    for name, events, wall, peak_mib, note in rows:
        memory = f"{peak_mib:.0f}" if peak_mib else "-"
        print(f"| {name} | {events:,} | {wall:.3f} | {memory} | {note} |")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
