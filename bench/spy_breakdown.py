"""Where a process held the GIL, by layer: the raw folded stacks `py-spy record --format
raw` wrote (`bench/pipeline.py --py-spy DIR`, `bench/webhook_ingest.py --py-spy DIR`),
each sample given to the innermost frame that belongs to a known layer.

    .venv/bin/python bench/spy_breakdown.py DIR/web-*.txt
    .venv/bin/python bench/spy_breakdown.py --per 20000 DIR/max-*.txt   # ms per request

With --per N (the requests or messages the samples cover) it also prints milliseconds
of GIL time per item (py-spy samples 100 times a second: a sample is 10 ms).
"""

import argparse
from collections import Counter
from pathlib import Path

# Checked against each frame's file, innermost frame first; the first layer that owns a
# frame takes the sample. Order matters only where fragments overlap (django/db/ before
# django/).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("PostgreSQL driver (psycopg)", ("psycopg/", "psycopg_pool/")),
    ("SQLite driver", ("sqlite3/",)),
    ("Redis client (redis-py)", ("redis/",)),
    ("queue (Huey)", ("huey/",)),
    ("HTTP client below requests (urllib3, http.client)", ("urllib3/", "http/client.py")),
    ("requests", ("requests/",)),
    ("ORM and SQL (django.db)", ("django/db/",)),
    ("DRF", ("rest_framework/",)),
    ("logging", ("logging/", "multichannel/observability.py", "multichannel/redaction.py")),
    ("metrics (prometheus-client)", ("prometheus_client/",)),
    ("gunicorn", ("gunicorn/",)),
    ("Django request path and middleware", ("django/", "csp/", "axes/", "whitenoise/")),
    ("the product's code", ("multichannel/", "whatsapp/", "audit/", "web/")),
]
OTHER = "interpreter and standard library, outside every layer above"
SAMPLE_MS = 10.0  # py-spy's --rate 100


def layer_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        where = frame[frame.rfind("(") + 1 :] if "(" in frame else frame
        for name, fragments in LAYERS:
            if any(fragment in where for fragment in fragments):
                return name
    return OTHER


def breakdown(paths: list[Path]) -> Counter[str]:
    samples: Counter[str] = Counter()
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                samples[layer_of(stack.split(";"))] += int(count)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+", help="py-spy raw output files")
    parser.add_argument("--per", type=int, help="requests or messages the samples cover")
    args = parser.parse_args()
    samples = breakdown(args.files)
    total = sum(samples.values())
    if not total:
        raise SystemExit("no samples in those files")
    per = f" | ms per item (of {args.per:,})" if args.per else ""
    print(f"| layer | samples | share{per} |")
    print("|---|---:|---:|" + ("---:|" if args.per else ""))
    for name, count in samples.most_common():
        row = f"| {name} | {count} | {count / total:.0%} |"
        if args.per:
            row += f" {count * SAMPLE_MS / args.per:.3f} |"
        print(row)
    tail = f" | {total * SAMPLE_MS / args.per:.3f} |" if args.per else " |"
    print(f"| all | {total} | 100%{tail}")


if __name__ == "__main__":
    main()
