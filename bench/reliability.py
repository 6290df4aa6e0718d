"""Run the fault-injection suite (tests/test_faults.py, `pytest -m fault`) and print
each scenario's counts as the table in docs/reliability.md.

    .venv/bin/python bench/reliability.py [--runs N]

Each scenario starts the production profile (gunicorn + one queue consumer, DEBUG off)
and a sandbox server for MKA1 and the Graph API as separate processes, breaks something
(see the "injected" column), plays Meta (signed webhooks, redelivered until answered with
200) and waits for every reply. The suite itself asserts that nothing was lost or
duplicated; this script only collects what each run counted. With --runs N the suite
runs N times and every run's row is printed (a scenario that failed in a run has no row
for it, and the script exits non-zero).

Columns: sent = distinct messages; webhooks = HTTP deliveries including Meta's
redeliveries and deliberate duplicates; acked = messages acknowledged with 200;
stored / answered (delivered) / replied (distinct replies at the Graph stand-in) /
audited (`responses.create` events); dup = duplicates stored + answered + replied;
MKA1 responses = responses the MKA1 stand-in created (more than `sent` means calls whose
answer was lost with a killed process or a timed-out read: orphans at MKA1, never seen by
the user); s = wall seconds of the scenario.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="run the suite this many times")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    failed = False
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as scratch:
            report = Path(scratch) / "faults.jsonl"
            suite = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "fault"],
                cwd=ROOT,
                env={**os.environ, "FAULT_REPORT": str(report)},
                check=False,
            )
            failed |= suite.returncode != 0
            if report.exists():
                rows += [json.loads(line) for line in report.read_text().splitlines()]
    print()
    print(
        "| scenario | injected | sent | webhooks | acked | stored | answered | replied "
        "| audited | dup | MKA1 responses | s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        duplicates = row["duplicates"]
        assert isinstance(duplicates, dict)
        print(
            f"| {row['scenario']} | {row['injected']} | {row['sent']} | {row['deliveries']} "
            f"| {row['acknowledged']} | {row['stored']} | {row['answered']} | {row['replied']} "
            f"| {row['audited']} | {sum(duplicates.values())} | {row['mka1_responses']} "
            f"| {row['seconds']} |"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
