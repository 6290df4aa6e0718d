"""The cost of recording one audit event (AuditEvent.objects.record), for this checkout
and another version of the code, in alternating runs on one machine.

    git archive <commit> | tar -x -C /tmp/base
    .venv/bin/python bench/record_cost.py --db sqlite --base /tmp/base

Results and method: docs/benchmarks.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchkit  # noqa: E402

from tests.support.stack import postgres_database  # noqa: E402

CHILD = """
import json, sys, time
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from audit.models import AuditEvent
warmup, events = int(sys.argv[1]), int(sys.argv[2])
text = "Mañana hará 21 °C en São Paulo, con cielo parcialmente nublado. " * 15
took = []
for n in range(warmup + events):
    started = time.perf_counter()
    AuditEvent.objects.record(
        channel="whatsapp", action="responses.create", end_user_id=str(n % 1000),
        response_id=f"resp_{n:08d}", conversation_id=f"conv_{n // 10:07d}",
        full_response={"id": f"resp_{n:08d}", "output_text": text},
        api_key_fingerprint="sha256:0123456789abcdef", context={"wamid": f"wamid.{n}"},
    )
    if n >= warmup:
        took.append(time.perf_counter() - started)
print(json.dumps(took))
"""


def one_run(code: Path, db: str, warmup: int, events: int, scratch: Path) -> list[float]:
    with ExitStack() as cleanup:
        database_url = (
            cleanup.enter_context(postgres_database("bench_record"))
            if db == "postgres"
            else f"sqlite:///{scratch / f'{code.name}-{os.getpid()}.sqlite3'}"
        )
        env = benchkit.django_env(database_url, scratch, code=code)
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(warmup), str(events)],
            cwd=code, env=env, capture_output=True, text=True, timeout=1800, check=False,
        )  # fmt: skip
        if db != "postgres":
            Path(database_url.removeprefix("sqlite:///")).unlink(missing_ok=True)
        if done.returncode:
            raise SystemExit(f"{code}: recording failed:\n{done.stderr[-2000:]}")
        return [float(t) for t in json.loads(done.stdout.splitlines()[-1])]


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    mean = statistics.fmean(times) * 1e6

    def pct(q: float) -> float:
        return benchkit.percentile(ordered, q) * 1e6

    return f"{len(times):,} | {mean:,.0f} | {pct(50):,.0f} | {pct(90):,.0f} | {pct(99):,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--base", type=Path, required=True, help="the other version's directory")
    parser.add_argument("--events", type=int, default=2000, help="timed events per run")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs")
    args = parser.parse_args()
    print(benchkit.machine_facts())
    versions = {"this": ROOT, "base": args.base.resolve()}
    times: dict[str, list[float]] = {name: [] for name in versions}
    with tempfile.TemporaryDirectory(prefix="bench-record-") as scratch:
        for round_ in range(args.rounds):
            # Each version goes first in every other round: no version always gets the
            # colder (or warmer) slot.
            order = list(versions.items())
            for name, code in order if round_ % 2 == 0 else reversed(order):
                times[name] += one_run(code, args.db, args.warmup, args.events, Path(scratch))
    print()
    print(f"| {args.db} | calls | mean µs | p50 µs | p90 µs | p99 µs |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in versions:
        print(f"| {name} | {summary(times[name])} |")
    medians = statistics.median(times["this"]) / statistics.median(times["base"])
    means = statistics.fmean(times["this"]) / statistics.fmean(times["base"])
    print(f"\nthis / base: {medians:.3f} (medians), {means:.3f} (means)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
