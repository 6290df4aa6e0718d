"""What the bench scripts share beyond tests/support (the production stack, the
invariant checker, the signed webhook): CPU times from /proc, percentiles, the line of
machine facts each benchmark prints, and its scratch directory.

The scripts import it as `benchkit` (run as `python bench/<script>.py`, bench/ is first
on sys.path; bench/ has no __init__.py); importing it puts the project root on sys.path
too, for `tests.support`. Nothing here imports Django.
"""

import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

from tests.support.stack import POSTGRES as TEST_POSTGRES  # noqa: E402
from tests.support.stack import (  # noqa: E402
    PRODUCTION_ENV,
    Stack,
    postgres_database,
    query,
    reachable,
    redis_flush,
)

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", TEST_POSTGRES)
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


def stack_on(
    db: str,
    scratch: Path,
    cleanup: ExitStack,
    *,
    prefix: str,
    postgres: str = POSTGRES,
    redis: str = REDIS,
    app_env: Mapping[str, str | None] | None = None,
    sandbox_env: Mapping[str, str | None] | None = None,
) -> Stack:
    """The fault suite's production stack for one benchmark run, stopped when `cleanup`
    closes: on SQLite files in `scratch` (`db` "sqlite"), or on a scratch PostgreSQL
    database named after `prefix` (dropped afterwards) and a Redis db flushed before and
    after ("postgres")."""
    database_url = redis_url = ""
    if db == "postgres":
        database_url = cleanup.enter_context(postgres_database(prefix, postgres))
        redis_url = redis
        redis_flush(redis_url)
        cleanup.callback(redis_flush, redis_url)
        cleanup.callback(django_connections_close)
    stack = Stack(
        scratch,
        database_url=database_url,
        redis_url=redis_url,
        app_env=app_env,
        sandbox_env=sandbox_env,
    )
    cleanup.callback(stack.stop)
    return stack


def gunicorn_size(workers: int | None, threads: int | None) -> dict[str, str | None]:
    """The app's gunicorn workers and threads, where given (None: the product's default)."""
    return {
        "WEB_CONCURRENCY": None if workers is None else str(workers),
        "GUNICORN_THREADS": None if threads is None else str(threads),
    }


def gunicorn_defaults(env: dict[str, str]) -> tuple[int, int]:
    """Workers and threads multichannel/gunicorn.py gives under this environment."""
    code = "import multichannel.gunicorn as g; print(g.workers, g.threads)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        check=True,
    ).stdout.split()  # fmt: skip
    return int(out[0]), int(out[1])


def django_env(
    database_url: str, scratch: Path, *, code: Path = ROOT, redis_url: str = "", **extra: str
) -> dict[str, str]:
    """The environment of a Django process a script starts from the code in `code`: the
    production settings (DEBUG off: with it on, Django keeps every query's SQL, which the
    script would measure), the given database and Redis (none: the SQLite queue), the
    queue and cache files in `scratch`, warnings only in the log; then `extra`."""
    return {
        **os.environ,
        **PRODUCTION_ENV,
        "DJANGO_SETTINGS_MODULE": "multichannel.settings",
        "PYTHONPATH": str(code),
        "HUEY_IMMEDIATE": "false",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "HUEY_SQLITE_PATH": str(scratch / "queue.sqlite3"),
        "CACHE_DIR": str(scratch / "cache"),
        "LOG_LEVEL": "WARNING",
        **extra,
    }


@contextmanager
def scratch(prefix: str, *, keep: bool) -> Iterator[Path]:
    """A temporary directory for one run, removed at the end unless `keep`; this
    process's Django connections (if any) are closed first."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield directory
    finally:
        django_connections_close()
        if keep:
            print(f"scratch directory kept: {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)


def django_connections_close() -> None:
    """Before a scratch database is dropped under this process's feet."""
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()


# --- wall time and peak memory of one subprocess ---------------------------------------

# Runs argv[2:] with its stdout written to the file argv[1] (discarded when argv[1] is
# empty), then prints its wall seconds, peak RSS (KiB) and exit status as JSON. A fresh
# helper per command that imports nothing but the standard library, so RUSAGE_CHILDREN
# is that command's own peak (see bench/export_memory.py for the traps this avoids).
MEASURE = """
import json, resource, subprocess, sys, time
with open(sys.argv[1] or "/dev/null", "wb") as out:
    started = time.perf_counter()
    status = subprocess.run(sys.argv[2:], stdout=out).returncode
    elapsed = time.perf_counter() - started
print(json.dumps([
    elapsed,
    resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    status,
]))
"""


def measure(
    command: list[str], stdout: Path | None = None, env: dict[str, str] | None = None
) -> tuple[float, int]:
    """Run one command under the MEASURE helper; return (wall seconds, peak RSS in KiB)."""
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(stdout or ""), *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise SystemExit(f"measuring failed: {result.stderr}")
    elapsed, peak_kib, status = json.loads(result.stdout)
    if status:
        raise SystemExit(f"{command[0]} failed ({status}): {result.stderr}")
    return float(elapsed), int(peak_kib)


# --- CPU times from /proc --------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    comm: str
    own: float  # user + system seconds of the process itself
    reaped: float  # user + system seconds of its children it has waited for


def proc_stats() -> dict[int, ProcStat]:
    stats: dict[int, ProcStat] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state): utime 14, stime 15, cutime 16, cstime 17
        stats[int(entry.name)] = ProcStat(
            pid=int(entry.name),
            ppid=int(fields[1]),
            comm=comm,
            own=(int(fields[11]) + int(fields[12])) / TICK,
            reaped=(int(fields[13]) + int(fields[14])) / TICK,
        )
    return stats


def family(root: int, stats: dict[int, ProcStat]) -> list[int]:
    """A process and all its living descendants."""
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_cpu(root: int, stats: dict[int, ProcStat]) -> float | None:
    """CPU seconds of a process and all its descendants, living or reaped (an exited
    gunicorn worker's time is in the master's `reaped`)."""
    if root not in stats:
        return None
    return sum(stats[pid].own + stats[pid].reaped for pid in family(root, stats))


def find_root(stats: dict[int, ProcStat], comm: str) -> int | None:
    """The topmost process named `comm` (the PostgreSQL postmaster, redis-server)."""
    for stat in stats.values():
        parent = stats.get(stat.ppid)
        if stat.comm == comm and (parent is None or parent.comm != comm):
            return stat.pid
    return None


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / TICK, total / TICK


@dataclass(frozen=True)
class CpuSample:
    at: float
    trees: dict[str, float | None]
    busy: float
    total: float


def cpu_sample(roots: dict[str, int | None]) -> CpuSample:
    stats = proc_stats()
    busy, total = machine_busy()
    trees = {name: (tree_cpu(pid, stats) if pid else None) for name, pid in roots.items()}
    return CpuSample(time.monotonic(), trees, busy, total)


def cpu_shares(before: CpuSample, after: CpuSample) -> dict[str, float | None]:
    """Each tree's CPU over the interval as a share of one core, plus the machine's
    busy share of all cores ("machine busy", 1.0 = every core busy)."""
    wall = after.at - before.at
    shares: dict[str, float | None] = {}
    for name, start in before.trees.items():
        end = after.trees.get(name)
        shares[name] = None if start is None or end is None else (end - start) / wall
    cores = os.cpu_count() or 1
    ticks = after.total - before.total
    shares["machine busy"] = (after.busy - before.busy) / ticks if ticks else None
    shares["machine cores"] = float(cores)
    return shares


# --- reporting ---------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def postgres_version(server: str = POSTGRES) -> str:
    if not reachable("127.0.0.1", 5432) and "127.0.0.1:5432" in server:
        return "not reachable"
    try:
        rows = query(f"{server}/postgres", "SHOW server_version")
    except Exception as exc:  # reported, not fatal: only the SQLite run may be wanted
        return f"unavailable ({type(exc).__name__})"
    return str(rows[0][0]).split()[0] if rows else "?"


def machine_facts() -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, PostgreSQL {postgres_version()}, {now}, "
        f"load average {load} at start"
    )


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty collection."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def py_spy_start(directory: Path, targets: Mapping[str, int]) -> list[subprocess.Popen[bytes]]:
    """`py-spy record` of each named pid (only while it holds the GIL, 100 samples a
    second), written as raw folded stacks to DIR/<name>.txt when stopped."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        raise SystemExit("--py-spy needs py-spy: .venv/bin/pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    profilers = []
    for name, pid in targets.items():
        command = [spy, "record", "--pid", str(pid), "--rate", "100", "--nonblocking", "--gil"]
        command += ["--format", "raw", "--output", str(directory / f"{name}.txt")]
        profilers.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return profilers


def py_spy_stop(profilers: list[subprocess.Popen[bytes]]) -> None:
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for profiler in profilers:
        try:
            profiler.wait(timeout=60)
        except subprocess.TimeoutExpired:
            profiler.kill()
