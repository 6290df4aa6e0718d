"""What `bench/webhook_ingest.py` and `bench/retrieval.py` share: scratch databases, the
production-profile environment, gunicorn and runserver subprocesses, CPU times from
/proc, and the one line of machine facts each benchmark prints.

The scripts import it as `benchkit` (run as `python bench/<script>.py`, bench/ is first
on sys.path; bench/ has no __init__.py). Nothing here imports Django, and psycopg and
redis are imported only by the functions that need them, so a script can use this
before it sets up Django.
"""

import json
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import requests

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")

# Obviously fake credentials: nothing here ever reaches Meta or MKA1.
APP_SECRET = "bench-app-secret-not-real"  # noqa: S105
MKA1_KEY = "bench-mka1-key-not-real"
SECRET_KEY = "bench-secret-key-not-real-" + "0123456789abcdef" * 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# --- scratch stores -------------------------------------------------------------------


def postgres_create(prefix: str) -> str:
    """A new, empty database with a unique name; returns its URL."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"{POSTGRES}/{name}"


def postgres_drop(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_flush(url: str = REDIS) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


# --- the environment ---------------------------------------------------------------


def production_env(
    *,
    database_url: str,
    redis_url: str,
    queue_path: Path,
    bind: str,
    mka1_base_url: str,
    graph_url: str,
    workers: int | None = None,
    threads: int | None = None,
    settings_module: str = "multichannel.settings",
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The production profile (DEBUG off, no sandbox) on loopback, over plain HTTP.

    Every variable that matters is set explicitly, so neither the caller's environment
    nor a `.env` file beside manage.py can point the benchmark elsewhere."""
    inherited = ("MKA1_", "WHATSAPP_", "GUNICORN_", "WEB_CONCURRENCY", "HUEY_", "API_THROTTLE")
    base = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env = {
        **base,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "PYTHONPATH": str(ROOT),
        "DEBUG": "false",
        "SANDBOX": "false",
        "SECRET_KEY": SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",  # plain HTTP on loopback
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "HUEY_SQLITE_PATH": str(queue_path),
        "HUEY_IMMEDIATE": "false",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "MKA1_API_KEY": MKA1_KEY,
        "MKA1_BASE_URL": mka1_base_url,
        "WHATSAPP_GRAPH_URL": graph_url,
        "WHATSAPP_VERIFY_TOKEN": "bench-verify-token-not-real",
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_TOKEN": "bench-graph-token-not-real",
        "WHATSAPP_PHONE_NUMBER_ID": "100000000000001",
        "GUNICORN_BIND": bind,
    }
    if workers is not None:
        env["WEB_CONCURRENCY"] = str(workers)
    if threads is not None:
        env["GUNICORN_THREADS"] = str(threads)
    env.update(extra or {})
    return env


def gunicorn_defaults(env: dict[str, str]) -> tuple[int, int]:
    """Workers and threads multichannel/gunicorn.py gives under this environment."""
    code = "import multichannel.gunicorn as g; print(g.workers, g.threads)"
    out = subprocess.run(
        [PYTHON, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1])


def manage(args: list[str], env: dict[str, str], timeout: float = 300) -> None:
    done = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


# --- servers -------------------------------------------------------------------------


def gunicorn_start(
    env: dict[str, str], log: IO[bytes], control_socket: Path, extra: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """The product's gunicorn command. Its control socket (gunicorn 25.1+) is moved into
    the scratch directory: by default every gunicorn of this user shares
    ~/.gunicorn/gunicorn.ctl, and one that stops removes it under the others."""
    command = [PYTHON, "-m", "gunicorn", "-c", "python:multichannel.gunicorn"]
    command += ["--control-socket", str(control_socket), *(extra or []), "multichannel.wsgi"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def runserver_start(env: dict[str, str], port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    command = [PYTHON, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(
    url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 90
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise SystemExit(f"{url}: the server exited ({process.returncode}):\n{tail}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} was not healthy after {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


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


def tree_cpu(root: int, stats: dict[int, ProcStat]) -> float | None:
    """CPU seconds of a process and all its descendants, living or reaped (an exited
    gunicorn worker's time is in the master's `reaped`)."""
    if root not in stats:
        return None
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats[pid].own + stats[pid].reaped
        todo.extend(children.get(pid, []))
    return total


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


def postgres_version() -> str:
    if not reachable("127.0.0.1", 5432) and "127.0.0.1:5432" in POSTGRES:
        return "not reachable"
    try:
        import psycopg

        with psycopg.connect(f"{POSTGRES}/postgres", connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]).split()[0] if row else "?"
    except Exception as exc:  # reported, not fatal: only the SQLite run may be wanted
        return f"unavailable ({type(exc).__name__})"


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


def verify_audit(env: dict[str, str], events: int | None = None) -> tuple[bool, str]:
    """Run `manage.py verify_audit`: whether the chain holds (with exactly `events`
    events, when given), and its report line or the problem."""
    result = subprocess.run(
        [PYTHON, "manage.py", "verify_audit"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    expected = "OK: " if events is None else f"OK: {events} events"
    if result.returncode or not result.stdout.startswith(expected):
        return (
            False,
            f"verify_audit: {result.returncode} {result.stdout[:200]} {result.stderr[-500:]}",
        )
    return True, result.stdout.strip()


def scratch_remove(*, db: str, database_url: str | None, scratch: Path, keep: bool) -> None:
    """What every benchmark leaves behind: connections, the scratch PostgreSQL database
    and Redis db, the scratch directory (unless kept)."""
    if "django" in sys.modules:
        from django.db import connections

        connections.close_all()
    if db == "postgres" and database_url:
        postgres_drop(database_url)
        redis_flush(REDIS)
    if keep:
        print(f"scratch directory kept: {scratch}", file=sys.stderr)
    else:
        shutil.rmtree(scratch, ignore_errors=True)
