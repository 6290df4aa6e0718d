"""The whole WhatsApp path as deployed, over real HTTP: webhooks -> gunicorn -> queue ->
one Huey consumer with W threads -> an MKA1 that takes L ms -> replies via the Graph API.
Measures messages answered per second, reply latency, MKA1 calls in flight, and each
process's CPU and peak memory, for one W or a sweep; every run must pass the fault
suite's exactly-once, in-order check (tests/support/invariants.py).

    .venv/bin/python bench/pipeline.py --db sqlite
    .venv/bin/python bench/pipeline.py --db postgres --users 200 --messages 5 --workers 64
    .venv/bin/python bench/pipeline.py --users 20 --messages 3 --latency-ms 300 --workers 1 4 8 16

Results and method: docs/benchmarks.md.
"""

import argparse
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchkit  # bench/ is first on sys.path; benchkit puts the project root next
import requests

from tests.support.invariants import exactly_once_in_order
from tests.support.stack import (
    APP_SECRET,
    GUNICORN,
    ROOT,
    Stack,
    query,
)
from tests.support.webhooks import Message, conversation, webhook_body, webhook_send

COUNTER_PATH = "/__pipeline/inflight"
STOP_TIMEOUT = 30.0  # seconds for each process to exit after its signal
SAMPLE_EVERY = 0.2  # seconds between looks at /proc and the in-flight counter
POLL_EVERY = 0.25  # seconds between looks at the app's database
GUNICORN_SERVICES = ("sandbox", "web")
LOG_MARKERS = (
    "Traceback",
    "ERROR",
    "CRITICAL",
    "WARNING",
    "database is locked",
    "Connection pool is full",
    "too many clients",
)

StartResponse = Callable[..., Any]
Wsgi = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


# --- the sandbox's in-flight counter (runs inside the sandbox's gunicorn) ------------


class InFlight:
    """WSGI wrapper: counts the MKA1 and Graph requests being served, with their peaks,
    and answers GET /__pipeline/inflight with the counters as JSON."""

    def __init__(self, app: Wsgi) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.now: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.total: Counter[str] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path == COUNTER_PATH:
            with self.lock:
                counters = {"now": self.now, "peak": self.peak, "total": self.total}
                body = json.dumps(counters).encode()
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        if path.startswith("/sandbox/mka1/"):
            service = "mka1"
        elif path.startswith("/sandbox/graph/"):
            service = "graph"
        else:
            return self.app(environ, start_response)
        with self.lock:
            self.now[service] += 1
            self.total[service] += 1
            self.peak[service] = max(self.peak[service], self.now[service])
        try:
            # The whole response, so that the call counts until its last byte is ready;
            # close() ends Django's request (and its database connection).
            result = self.app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        finally:
            with self.lock:
                self.now[service] -= 1
        return [body]


def sandbox_app() -> InFlight:
    """Gunicorn application factory for the sandbox: `pipeline:sandbox_app()`."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "multichannel.settings")
    from django.core.wsgi import get_wsgi_application

    return InFlight(get_wsgi_application())


def inflight_counters(sandbox_url: str) -> dict[str, dict[str, int]] | None:
    try:
        answer = requests.get(f"{sandbox_url}{COUNTER_PATH}", timeout=2)
        counters: dict[str, dict[str, int]] = answer.json()
    except (requests.RequestException, ValueError):
        return None
    return counters


# --- sampling /proc ------------------------------------------------------------------


@dataclass
class Usage:
    """What /proc said about one process, last time it was read."""

    role: str
    cpu: float = 0.0
    cpu_at_start: float | None = None
    hwm_kib: int = 0

    @property
    def cpu_in_run(self) -> float:
        return self.cpu - (self.cpu_at_start or 0.0)


@dataclass
class Sampler:
    """Reads /proc for every process of the stack (and `others`, by pid) and the
    sandbox's counter, every SAMPLE_EVERY seconds in a thread of its own."""

    stack: Stack
    others: Callable[[], dict[int, str]] = dict
    usage: dict[int, Usage] = field(default_factory=dict)
    inflight: list[tuple[float, int, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    counting: bool = False

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_EVERY):
            self.sample()

    def sample(self) -> None:
        stats = benchkit.proc_stats()
        for name, process in list(self.stack.processes.items()):
            for pid in benchkit.family(process.pid, stats):
                role = name
                if name in GUNICORN_SERVICES:
                    role += " gunicorn master" if pid == process.pid else " gunicorn worker"
                self._read(pid, role, stats)
        for pid, role in self.others().items():
            self._read(pid, role, stats)
        if self.counting:
            counters = inflight_counters(self.stack.sandbox_url)
            if counters is not None:
                now = counters["now"]
                self.inflight.append((time.time(), now.get("mka1", 0), now.get("graph", 0)))

    def _read(self, pid: int, role: str, stats: dict[int, benchkit.ProcStat]) -> None:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return  # gone
        if pid not in stats:
            return
        usage = self.usage.setdefault(pid, Usage(role))
        usage.cpu = stats[pid].own
        if usage.cpu_at_start is None:
            usage.cpu_at_start = usage.cpu
        for line in status.splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                usage.hwm_kib = max(usage.hwm_kib, int(line.split()[1]))

    def mark_start(self) -> None:
        """CPU counted from here on: the run, not the start-up."""
        self.sample()
        for usage in self.usage.values():
            usage.cpu_at_start = usage.cpu
        self.counting = True


class PostgresBackends:
    """PostgreSQL's backend processes connected to one database (on this machine, so
    /proc has them); looked up at every sample through one connection of its own."""

    def __init__(self, server: str, database: str) -> None:
        self.server, self.database = server, database
        self.connection: Any = None

    def __call__(self) -> dict[int, str]:
        import psycopg

        if self.connection is None:
            self.connection = psycopg.connect(f"{self.server}/postgres", autocommit=True)
        sql = "SELECT pid FROM pg_stat_activity WHERE datname = %s"
        rows = self.connection.execute(sql, (self.database,)).fetchall()
        return {int(pid): "postgres backends" for (pid,) in rows}

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


# --- the run -----------------------------------------------------------------------


@dataclass
class Posted:
    started: float = 0.0
    finished: float = 0.0
    seconds: list[float] = field(default_factory=list)
    acknowledged: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)


def post_webhooks(app_url: str, messages: list[Message], senders: int) -> Posted:
    """Every message as one signed webhook; each user's always from the same thread, so
    a user's next message goes out only once the last one was answered."""
    posted = Posted()
    lock = threading.Lock()
    users = sorted({message.wa_id for message in messages})

    def sender(mine: set[str]) -> None:
        session = requests.Session()
        session.trust_env = False
        for message in messages:
            if message.wa_id not in mine:
                continue
            began = time.perf_counter()
            try:
                answer = webhook_send(
                    app_url, webhook_body([message]), secret=APP_SECRET, session=session,
                    timeout=60,
                )  # fmt: skip
                failure = None if answer.status_code == 200 else f"{answer.status_code}"
            except requests.RequestException as exc:
                failure = str(exc)
            took = time.perf_counter() - began
            with lock:
                posted.seconds.append(took)
                if failure is None:
                    posted.acknowledged.add(message.wamid)
                else:
                    posted.failures.append(f"{message.wamid}: {failure}")

    count = min(senders, len(users))
    threads = [threading.Thread(target=sender, args=(set(users[s::count]),)) for s in range(count)]
    posted.started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    posted.finished = time.time()
    return posted


def states(stack: Stack) -> dict[str, int]:
    sql = "SELECT state, COUNT(*) FROM multichannel_usermessage GROUP BY state"
    return {state: int(count) for state, count in query(stack.database_url, sql)}


def wait_answered(stack: Stack, total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    now: dict[str, int] = {}
    while time.monotonic() < deadline:
        now = states(stack)
        if now.get("delivered", 0) + now.get("failed", 0) >= total:
            return
        for name, process in stack.processes.items():
            if process.poll() is not None:
                raise SystemExit(f"{name} exited mid-run: {now}")
        time.sleep(POLL_EVERY)
    raise SystemExit(f"not all answered after {timeout:.0f} s: {now}")


def moment(value: Any) -> float:
    """A timestamp column as read raw: SQLite's naive UTC text, or psycopg's datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def idle_probe(stack: Stack, idle: float) -> float:
    """Seconds from one webhook to its delivery after the consumer sat idle; the
    message comes from a user of its own, outside the checked run."""
    time.sleep(idle)
    total = sum(states(stack).values()) + 1
    message = Message("15559999999", "idle probe", "wamid.pipeline.probe", int(time.time()))
    started = time.perf_counter()
    answer = webhook_send(stack.app_url, webhook_body([message]), secret=APP_SECRET)
    if answer.status_code != 200:
        raise SystemExit(f"the idle probe's webhook answered {answer.status_code}")
    wait_answered(stack, total, timeout=60)
    return time.perf_counter() - started


def log_problems(logs: Iterable[Path]) -> dict[str, Counter[str]]:
    """Lines with a warning, an error or a known trouble sign, per log file."""
    found: dict[str, Counter[str]] = {}
    for log in logs:
        counts: Counter[str] = Counter()
        for line in log.read_text(errors="replace").splitlines():
            for marker in LOG_MARKERS:
                if marker in line:
                    counts[marker] += 1
        if counts:
            found[log.stem] = counts
    return found


def profile_start(directory: Path, sampler: Sampler) -> list[subprocess.Popen[bytes]]:
    """One `py-spy record` per process that does the work (not the gunicorn masters)."""
    targets = {
        f"{usage.role.replace(' ', '-')}-{pid}": pid
        for pid, usage in sampler.usage.items()
        if not usage.role.endswith("master") and usage.role.startswith(("web", "sandbox", "cons"))
    }
    profilers = benchkit.py_spy_start(directory, targets)
    time.sleep(1)  # attached before the first webhook
    return profilers


@dataclass
class Run:
    workers: int
    wall: float
    latencies: list[float]
    posted: Posted
    counters: dict[str, dict[str, int]]
    mean_mka1: float
    mean_graph: float
    retried: int
    stop_seconds: float
    idle_pickup: float | None
    usage: dict[int, Usage]
    logs: dict[str, Counter[str]]
    problems: list[str]


def run_once(args: argparse.Namespace, workers: int, scratch: Path) -> Run:
    """One W on fresh databases: start everything, post, wait, check, stop."""
    users, messages = args.users, args.messages
    total = users * messages
    workdir = scratch / f"workers-{workers}"
    workdir.mkdir()
    with contextlib.ExitStack() as cleanup:
        stack = benchkit.stack_on(
            args.db,
            workdir,
            cleanup,
            prefix="mc_pipeline",
            postgres=args.postgres,
            redis=args.redis,
            app_env={
                "WEB_CONCURRENCY": str(args.web_workers),
                "GUNICORN_THREADS": str(args.web_threads),
                "HUEY_WORKERS": str(workers),
            },
            sandbox_env={"SANDBOX_MKA1_LATENCY_MS": str(args.latency_ms), "LOG_LEVEL": "WARNING"},
        )
        # gthread with a thread for every call the consumer can have in flight, behind
        # the counting wrapper.
        stack.commands["sandbox"] = [
            *GUNICORN, "--workers=1", "--worker-class=gthread",
            f"--threads={args.sandbox_threads or workers + 32}",
            f"--bind=127.0.0.1:{stack.sandbox_port}", "--timeout=120", "--keep-alive=30",
            "--graceful-timeout=10", f"--chdir={ROOT}", f"--pythonpath={ROOT / 'bench'}",
            "pipeline:sandbox_app()",
        ]  # fmt: skip
        backends: Callable[[], dict[int, str]] = dict
        if args.db == "postgres":
            watcher = PostgresBackends(args.postgres, stack.database_url.rsplit("/", 1)[1])
            cleanup.callback(watcher.close)
            backends = watcher
        stack.up()

        def others() -> dict[int, str]:
            return {os.getpid(): "this script (webhooks, polling)", **backends()}

        sampler = Sampler(stack, others)
        sampler.mark_start()
        sampling = threading.Thread(target=sampler.run, daemon=True)
        sampling.start()
        latency = args.latency_ms / 1000
        timeout = 120 + 4 * math.ceil(users / workers) * (messages + 1) * latency + total * 0.5
        sent = conversation("pipeline", users=users, per_user=messages)
        profilers = profile_start(args.py_spy, sampler) if args.py_spy else []
        try:
            posted = post_webhooks(stack.app_url, sent, args.senders)
            if posted.failures:
                raise SystemExit(f"{len(posted.failures)} webhooks failed: {posted.failures[:5]}")
            wait_answered(stack, total, timeout)
        finally:
            benchkit.py_spy_stop(profilers)
        sampler.stop.set()
        sampling.join()
        sampler.sample()
        counters = inflight_counters(stack.sandbox_url) or {"peak": {}, "total": {}}

        sql = "SELECT created_at, updated_at FROM multichannel_usermessage WHERE state = "
        sql += "'delivered'"
        delivered = [(moment(a), moment(b)) for a, b in query(stack.database_url, sql)]
        last = max(updated for _, updated in delivered)
        during = [s for s in sampler.inflight if posted.started <= s[0] <= last]
        sql = "SELECT COUNT(*) FROM multichannel_usermessage WHERE error <> ''"
        retried = int(query(stack.database_url, sql)[0][0])

        outcome = exactly_once_in_order(stack, sent, posted.acknowledged)
        problems = list(outcome.problems)
        if outcome.mka1_responses != total or outcome.mka1_conversations != users:
            problems.append(
                f"MKA1 served {outcome.mka1_responses} responses and "
                f"{outcome.mka1_conversations} conversations for {total} messages of {users} "
                "users: nothing failed, so none should be orphaned"
            )
        idle = idle_probe(stack, args.idle_probe) if args.idle_probe else None
        began = time.monotonic()
        if stack.kill("consumer", signal.SIGINT, STOP_TIMEOUT) != 0:  # Huey's graceful stop
            problems.append("the consumer did not exit 0 after SIGINT")
        stop_seconds = time.monotonic() - began
        problems += [f"{name} ignored SIGTERM and was killed" for name in stack.stop()]
        return Run(
            workers=workers,
            wall=last - posted.started,
            latencies=[updated - created for created, updated in delivered],
            posted=posted,
            counters=counters,
            mean_mka1=statistics.fmean(s[1] for s in during) if during else 0.0,
            mean_graph=statistics.fmean(s[2] for s in during) if during else 0.0,
            retried=retried,
            stop_seconds=stop_seconds,
            idle_pickup=idle,
            usage=sampler.usage,
            logs=log_problems(sorted(workdir.glob("*.log"))),
            problems=problems,
        )


# --- output --------------------------------------------------------------------------


def print_processes(run: Run, total: int) -> None:
    print(f"W={run.workers}, per process, first webhook to last reply ({run.wall:.1f} s):")
    print()
    print("| process | pid | CPU s | CPU (share of one core) | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    backends = [u for u in run.usage.values() if u.role == "postgres backends"]
    for pid, usage in sorted(run.usage.items(), key=lambda item: (item[1].role, item[0])):
        if usage.role == "postgres backends":
            continue
        cpu = usage.cpu_in_run
        share, mib = cpu / run.wall, usage.hwm_kib / 1024
        print(f"| {usage.role} | {pid} | {cpu:.1f} | {share:.0%} | {mib:.1f} |")
    if backends:
        # Their RSS counts the shared buffers they touched: not comparable, left out.
        cpu = sum(u.cpu_in_run for u in backends)
        print(
            f"| postgres backends (this database) | {len(backends)} pids | {cpu:.1f} "
            f"| {cpu / run.wall:.0%} | - |"
        )
    consumer = sum(u.cpu_in_run for u in run.usage.values() if u.role == "consumer")
    everything = sum(u.cpu_in_run for u in run.usage.values())
    print()
    print(
        f"consumer: {consumer / total * 1000:.0f} ms of CPU per message; all of the above: "
        f"{everything:.1f} CPU s, {everything / run.wall:.2f} of {os.cpu_count()} cores on average"
    )
    totals = run.counters["total"]
    print(
        f"sandbox served {totals.get('mka1', 0)} MKA1 requests and {totals.get('graph', 0)} "
        "Graph requests (replies and read receipts)"
    )
    for name, counts in run.logs.items():
        print(f"log lines in {name}: " + ", ".join(f"{k} x{n}" for k, n in counts.items()))
    print()


def print_table(args: argparse.Namespace, runs: list[Run]) -> None:
    users, messages, latency = args.users, args.messages, args.latency_ms / 1000
    header = (
        "| db | users x msgs | W | L ms | wall s | msg/s | speedup | bound s (rounds / fluid) "
        "| reply p50 / p99 / max s | MKA1 in flight peak / mean | Graph peak / mean "
        "| webhooks s (p50 / p99 ms) | retried | stop s |"
    )
    if args.idle_probe:
        header += " idle pickup s |"
    print(header)
    print("|---|---|" + "---:|" * (header.count("|") - 3))
    for run in runs:
        rounds = math.ceil(users / run.workers) * (messages + 1) * latency
        fluid = users / min(users, run.workers) * (messages + 1) * latency
        peak, seconds = run.counters["peak"], run.posted.seconds
        line = (
            f"| {args.db} | {users} x {messages} | {run.workers} | {args.latency_ms} "
            f"| {run.wall:.2f} | {users * messages / run.wall:.1f} "
            f"| {runs[0].wall / run.wall:.1f}x "
            f"| {rounds:.1f} / {fluid:.1f} "
            f"| {benchkit.percentile(run.latencies, 50):.2f} / "
            f"{benchkit.percentile(run.latencies, 99):.2f} / {max(run.latencies):.2f} "
            f"| {peak.get('mka1', 0)} / {run.mean_mka1:.1f} "
            f"| {peak.get('graph', 0)} / {run.mean_graph:.1f} "
            f"| {run.posted.finished - run.posted.started:.2f} "
            f"({benchkit.percentile(seconds, 50) * 1000:.0f} / "
            f"{benchkit.percentile(seconds, 99) * 1000:.0f}) | {run.retried} "
            f"| {run.stop_seconds:.1f} |"
        )
        if run.idle_pickup is not None:
            line += f" {run.idle_pickup:.2f} |"
        print(line)


# --- main --------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--users", type=int, default=200, help="end users (N)")
    parser.add_argument("--messages", type=int, default=5, help="messages per user (M)")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[64], help="consumer threads (W), one run each"
    )
    parser.add_argument("--latency-ms", type=int, default=1000, help="each MKA1 call (L)")
    parser.add_argument("--senders", type=int, default=8, help="threads posting webhooks")
    parser.add_argument("--web-workers", type=int, default=2, help="app gunicorn processes")
    parser.add_argument("--web-threads", type=int, default=8, help="threads per app process")
    parser.add_argument(
        "--sandbox-threads", type=int, default=0, help="sandbox gunicorn threads (W + 32)"
    )
    parser.add_argument("--postgres", default=benchkit.POSTGRES, help="server for --db postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12", help="flushed before/after")
    parser.add_argument(
        "--idle-probe", type=float, default=0,
        help="after each run, seconds idle before timing one more message",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="profile the consumer, app and sandbox workers over the run with py-spy "
        "(pip install py-spy): where each holds the GIL, as raw folded stacks in DIR",
    )
    args = parser.parse_args()
    if min(args.users, args.messages, *args.workers, args.senders, args.web_workers) < 1:
        parser.error("users, messages, workers, senders and web workers must be at least 1")
    if args.latency_ms < 0 or not 0 <= args.idle_probe <= 600:
        parser.error("--latency-ms must be 0 or more, --idle-probe 0 to 600 s")
    if args.users * args.messages > 100_000 or max(args.workers) > 512:
        parser.error("keep it reasonable: at most 100,000 messages and 512 workers")

    print(benchkit.machine_facts())
    print(
        f"{args.users} users x {args.messages} messages, MKA1 latency {args.latency_ms} ms, "
        f"{args.db}; consumer threads {' '.join(map(str, args.workers))}"
    )
    runs: list[Run] = []
    with benchkit.scratch("pipeline-bench-", keep=args.keep) as scratch:
        for workers in args.workers:
            runs.append(run_once(args, workers, scratch))
            print(f"  W={workers}: {runs[-1].wall:.1f} s", file=sys.stderr, flush=True)
    print()
    for run in runs:
        print_processes(run, args.users * args.messages)
    print_table(args, runs)
    print()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    problems = [f"W={run.workers}: {problem}" for run in runs for problem in run.problems]
    if problems:
        print("\n".join(problems[:30]), file=sys.stderr)
        print(f"FAILED: {len(problems)} checks", file=sys.stderr)
        return 1
    print(
        "every run: every message stored, answered, replied to and audited exactly once, "
        "in order per user, linear turn chains, no orphaned MKA1 calls, verify_audit OK, "
        "the consumer stopped by SIGINT with exit status 0"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
