"""Run the fault-injection suite (tests/test_faults.py, `pytest -m fault`) and print
each scenario's counts as the table in docs/reliability.md; the suite itself asserts
that nothing was lost or duplicated. With --runs N, every run's rows (a scenario that
failed in a run has no row, and the script exits non-zero).

    .venv/bin/python bench/reliability.py [--runs N]

Results, scenarios and columns: docs/reliability.md.
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
