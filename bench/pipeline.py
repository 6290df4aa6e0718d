"""The whole WhatsApp path over real HTTP, as deployed: webhooks -> gunicorn -> queue ->
one Huey consumer -> a slow MKA1 -> replies through the Graph API.

    .venv/bin/python bench/pipeline.py --db sqlite
    .venv/bin/python bench/pipeline.py --db postgres --users 200 --messages 5 --workers 64

Processes, all started by this script and stopped at the end:

- the production app: `gunicorn -c python:multichannel.gunicorn multichannel.wsgi`
  (DEBUG=false, SANDBOX=false, WEB_CONCURRENCY=--web-workers processes of
  GUNICORN_THREADS=--web-threads threads), which stores each webhook and enqueues a task;
- ONE queue consumer: `manage.py run_huey --workers W --worker-type thread` with the same
  production settings, calling MKA1 and the Graph API over HTTP;
- the sandbox, playing MKA1 and the Graph API (DEBUG=true, SANDBOX=true,
  SANDBOX_MKA1_LATENCY_MS=--latency-ms on every MKA1 call) in its own SQLite database,
  served by gunicorn gthread (one process, --sandbox-threads threads, so it holds every
  call the consumer can have in flight) through a small WSGI wrapper in this file
  (`sandbox_app`) that counts the MKA1 and Graph requests in flight and answers
  GET /__pipeline/inflight with the counters.

`--db sqlite`: the app's database and its queue are SQLite files in a scratch directory.
`--db postgres`: a scratch PostgreSQL database (created, then dropped; --postgres names
the server) and Redis db 12 (--redis; flushed before and after). Either way the sandbox
keeps its own SQLite file: it is the stand-in, not the system measured.

This process plays Meta: N users x M messages, each a signed webhook posted over HTTP,
round robin (every user's first message, then every user's second, ...) by --senders
threads, each user always from the same thread so that a user's messages arrive in the
order sent (each webhook waits for the previous one's 200).

Reported:

- msg/s answered: N x M over the time from the first webhook posted to the last reply
  delivered (the latest `updated_at` of the delivered messages in the app's database);
- reply latency p50 / p99 / max: each message's time from stored (`created_at`) to
  delivered (`updated_at`);
- peak MKA1 calls in flight, counted exactly by the sandbox's wrapper, and the mean of
  the counter polled every 0.2 s over the run (the Graph API's too);
- per process (gunicorn master and each worker, the consumer, the sandbox's master and
  worker): CPU seconds (user + system, /proc/<pid>/stat) during the run, as a share of
  one core, and peak RSS (VmHWM from /proc/<pid>/status, read every 0.2 s and at the end).

Checked afterwards, and the script exits non-zero if any check fails: every message
stored once, delivered, answered by exactly one turn and one MKA1 response; each user's
replies reached the Graph stand-in exactly once each and in the order sent; each user's
turn chain is linear and walks their messages in order; one `responses.create` audit
event per message (and one `conversations.create` per user) for exactly the responses
stored; `manage.py verify_audit` accepts the ledger.

What limits it. One user's M+1 MKA1 calls (one conversations.create, then one
responses.create per message) are strictly sequential, and the worker that takes a
user's lease answers all of that user's waiting messages before it lets go, so W
workers serve at most W users at a time. With MKA1 latency L and nothing else slow the
run cannot beat N/W x (M+1) x L, and in whole rounds of W users ceil(N/W) x (M+1) x L:
200 users x 5 messages, W=64, L=1 s gives 18.75 s (53 msg/s) and 24 s (41.7 msg/s).
More workers lower the bound until W >= N (then it is (M+1) x L, 6 s here). Everything
else is on top: the consumer is one Python process, so its per-message CPU (ORM, HTTP
client, JSON, the audit hash chain) caps it at one core's worth whatever W is; on
SQLite every write of the web workers and the consumer queues for one file lock; the
HTTP pool of the MKA1 client keeps 32 connections, so beyond W=32 calls open and drop
connections; W consumer threads plus the web threads need that many PostgreSQL
connections (the server's max_connections, 100 by default, must leave room); and here
every process, PostgreSQL and this script share the same cores. The per-process CPU
table says which of them was busy.
"""

import argparse
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchkit  # bench/ is first on sys.path when a script here runs

ROOT = Path(__file__).resolve().parent.parent
COUNTER_PATH = "/__pipeline/inflight"
APP_SECRET = "pipeline-app-secret-not-real"  # noqa: S105 (a fake for a local run)
PHONE_NUMBER_ID = "100000000000001"
START_TIMEOUT = 120.0  # seconds for every process to come up
STOP_TIMEOUT = 30.0  # seconds for each to exit after its signal
SAMPLE_EVERY = 0.2  # seconds between looks at /proc and the in-flight counter
POLL_EVERY = 0.25  # seconds between looks at the app's database
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


# --- processes ---------------------------------------------------------------------


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGTERM
    gunicorn: bool = False


@dataclass
class Usage:
    """What /proc said about one process, last time it was read."""

    role: str
    cpu: float = 0.0
    cpu_at_start: float | None = None
    hwm_kib: int = 0
    rss_kib: int = 0


@dataclass
class Sampler:
    """Reads /proc for every process of every service, and the sandbox's counter, every
    SAMPLE_EVERY seconds in a thread of its own."""

    services: list[Service]
    sandbox_url: str
    # Other processes to watch, by pid: this script, PostgreSQL's backends for the run.
    others: Callable[[], dict[int, str]] = dict
    usage: dict[int, Usage] = field(default_factory=dict)
    inflight: list[tuple[float, int, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    counting: bool = False

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_EVERY):
            self.sample()

    def sample(self) -> None:
        for service in self.services:
            root = service.process.pid
            family = [root, *children(root)]
            for pid in family:
                role = service.name
                if service.gunicorn:
                    role += " gunicorn master" if pid == root else " gunicorn worker"
                self._read(pid, role)
        for pid, role in self.others().items():
            self._read(pid, role)
        if self.counting:
            counters = inflight_counters(self.sandbox_url)
            if counters is not None:
                now = counters["now"]
                self.inflight.append((time.time(), now.get("mka1", 0), now.get("graph", 0)))

    def _read(self, pid: int, role: str) -> None:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return  # gone
        usage = self.usage.setdefault(pid, Usage(role))
        fields = stat.rsplit(")", 1)[1].split()
        usage.cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if usage.cpu_at_start is None:
            usage.cpu_at_start = usage.cpu
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                usage.hwm_kib = max(usage.hwm_kib, int(line.split()[1]))
            elif line.startswith("VmRSS:"):
                usage.rss_kib = int(line.split()[1])
                usage.hwm_kib = max(usage.hwm_kib, usage.rss_kib)

    def mark_start(self) -> None:
        """CPU counted from here on: the run, not the start-up."""
        self.sample()
        for usage in self.usage.values():
            usage.cpu_at_start = usage.cpu
        self.counting = True


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def inflight_counters(sandbox_url: str) -> dict[str, dict[str, int]] | None:
    import requests

    try:
        answer = requests.get(f"{sandbox_url}{COUNTER_PATH}", timeout=2)
        counters: dict[str, dict[str, int]] = answer.json()
    except (requests.RequestException, ValueError):
        return None
    return counters


def start(name: str, command: list[str], env: dict[str, str], logs: Path, **kw: Any) -> Service:
    log = logs / f"{name}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    return Service(name, process, log, **kw)


def stop(services: list[Service]) -> list[str]:
    """Signal every service, wait, kill what is left; the problems seen."""
    problems = []
    for service in services:
        if service.process.poll() is None:
            service.process.send_signal(service.stop_signal)
    for service in services:
        try:
            service.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait(timeout=STOP_TIMEOUT)
            problems.append(f"{service.name} ignored its stop signal and was killed")
    return problems


def wait_until_up(services: list[Service], urls: list[str], consumer: Service) -> None:
    import requests

    deadline = time.monotonic() + START_TIMEOUT
    pending = list(urls)
    while pending or "consumer started" not in consumer.log.read_text(errors="replace"):
        for service in services:
            if service.process.poll() is not None:
                tail = service.log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"{service.name} exited at start:\n{tail}")
        if time.monotonic() > deadline:
            raise SystemExit(f"not up after {START_TIMEOUT:.0f} s: {pending or 'consumer'}")
        for url in list(pending):
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    pending.remove(url)
            except requests.RequestException:
                pass
        time.sleep(0.2)


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )


# --- the run -----------------------------------------------------------------------


def phone(user: int) -> str:
    return f"1555{user:07d}"


def text_of(user: int, message: int) -> str:
    return f"user {user} message {message}"


@dataclass
class Posted:
    started: float = 0.0
    finished: float = 0.0
    seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def post_webhooks(app_url: str, users: int, messages: int, senders: int) -> Posted:
    """Every message as one signed webhook, each user's in order from one thread."""
    import requests

    from multichannel.sandbox import whatsapp as wa

    posted = Posted()
    lock = threading.Lock()
    base = int(time.time())

    def sender(mine: list[int]) -> None:
        session = requests.Session()
        session.trust_env = False
        for message in range(messages):
            for user in mine:
                event = wa.message_event(
                    wa_id=phone(user),
                    text=text_of(user, message),
                    timestamp=base + message,
                    name=f"User {user}",
                )
                body = wa.encode(wa.webhook_payload([event], phone_number_id=PHONE_NUMBER_ID))
                began = time.perf_counter()
                try:
                    answer = session.post(
                        f"{app_url}/whatsapp/webhook",
                        data=body,
                        headers=wa.webhook_headers(body, APP_SECRET),
                        timeout=60,
                    )
                    failure = None if answer.status_code == 200 else f"{answer.status_code}"
                except requests.RequestException as exc:
                    failure = str(exc)
                took = time.perf_counter() - began
                with lock:
                    posted.seconds.append(took)
                    if failure is not None:
                        posted.failures.append(f"user {user} message {message}: {failure}")

    threads = [
        threading.Thread(target=sender, args=([u for u in range(users) if u % senders == s],))
        for s in range(min(senders, users))
    ]
    posted.started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    posted.finished = time.time()
    return posted


def wait_answered(total: int, timeout: float, services: list[Service]) -> None:
    from django.db.models import Count

    from multichannel.models import UserMessage

    deadline = time.monotonic() + timeout
    states: dict[str, int] = {}
    while time.monotonic() < deadline:
        states = dict(UserMessage.objects.values_list("state").annotate(n=Count("id")).order_by())
        finished = states.get(UserMessage.State.DELIVERED, 0)
        finished += states.get(UserMessage.State.FAILED, 0)
        if finished >= total:
            return
        for service in services:
            if service.process.poll() is not None:
                raise SystemExit(f"{service.name} exited mid-run: {states}")
        time.sleep(POLL_EVERY)
    raise SystemExit(f"not all answered after {timeout:.0f} s: {states}")


def sandbox_rows(database: Path, model: Any, columns: str, order: str = "id") -> list[Any]:
    table = model._meta.db_table
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as db:
        rows = db.execute(f'SELECT {columns} FROM "{table}" ORDER BY {order}').fetchall()
    db.close()
    return rows


def verify(users: int, messages: int, sandbox_db: Path) -> list[str]:
    """Every check the run must pass; the problems found (none when all hold)."""
    from audit.models import AuditEvent
    from multichannel.models import Conversation, Turn, UserMessage
    from multichannel.sandbox.mka1_views import reply_text
    from multichannel.sandbox.models import (
        SandboxConversation,
        SandboxGraphMessage,
        SandboxResponse,
    )

    problems: list[str] = []
    total = users * messages
    stored = list(UserMessage.objects.values_list("text", "state", "turn_id"))
    if len(stored) != total or len({text for text, _, _ in stored}) != total:
        problems.append(f"{len(stored)} messages stored ({len(set(stored))} distinct), not {total}")
    not_delivered = [text for text, state, _ in stored if state != UserMessage.State.DELIVERED]
    if not_delivered:
        problems.append(f"{len(not_delivered)} not delivered, e.g. {not_delivered[:3]}")
    if any(turn is None for _, _, turn in stored):
        problems.append("messages without a turn")

    replies: dict[str, list[str]] = {}
    for recipient, kind, body in sandbox_rows(
        sandbox_db, SandboxGraphMessage, "recipient, kind, body"
    ):
        if kind == "text":
            replies.setdefault(recipient, []).append(json.loads(body)["text"]["body"])
    for user in range(users):
        expected = [reply_text(text_of(user, m)) for m in range(messages)]
        got = replies.pop(phone(user), [])
        if got != expected:
            problems.append(f"user {user}: replies {got[:8]}, expected {expected[:8]}")
    if replies:
        problems.append(f"replies to unknown recipients: {sorted(replies)[:5]}")

    turns = list(Turn.objects.values_list("conversation_id", "previous_response_id", "response_id"))
    for conversation in Conversation.objects.all():
        mine = {prev: resp for conv, prev, resp in turns if conv == conversation.pk}
        walk, head = 0, None
        while head in mine and walk <= len(mine):
            head, walk = mine[head], walk + 1
        if walk != len(mine) or head != conversation.previous_response_id:
            problems.append(f"{conversation}: the turn chain is not one linear walk")
        sent = list(
            UserMessage.objects.filter(end_user_id=conversation.end_user_id)
            .order_by("sent_at", "id")
            .values_list("text", flat=True)
        )
        answered = list(
            UserMessage.objects.filter(end_user_id=conversation.end_user_id)
            .order_by("turn__id")
            .values_list("text", flat=True)
        )
        if sent != answered:
            problems.append(f"{conversation}: answered {answered}, sent {sent}")

    responses = {row[0] for row in sandbox_rows(sandbox_db, SandboxResponse, "id")}
    turned = {resp for _, _, resp in turns}
    audited = list(
        AuditEvent.objects.filter(action="responses.create").values_list("response_id", flat=True)
    )
    counts = {
        "turns": len(turns),
        "MKA1 responses": len(responses),
        "responses.create audit events": len(audited),
        "distinct audited responses": len(set(audited)),
    }
    for name, count in counts.items():
        if count != total:
            problems.append(f"{count} {name} for {total} messages")
    if not (set(audited) == turned == responses):
        problems.append("audited, stored and served response ids differ")
    created = AuditEvent.objects.filter(action="conversations.create").count()
    sandbox_conversations = len(sandbox_rows(sandbox_db, SandboxConversation, "id"))
    if created != users or sandbox_conversations != users:
        problems.append(
            f"{created} conversations.create events, {sandbox_conversations} MKA1 "
            f"conversations for {users} users"
        )
    return problems


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


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
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        raise SystemExit("--py-spy needs py-spy: .venv/bin/pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    profilers = []
    for pid, usage in sampler.usage.items():
        if usage.role.endswith("master") or not usage.role.startswith(("app", "sandbox", "cons")):
            continue
        output = directory / f"{usage.role.replace(' ', '-')}-{pid}.txt"
        command = [spy, "record", "--pid", str(pid), "--rate", "100", "--nonblocking", "--gil"]
        command += ["--format", "raw", "--output", str(output)]
        profilers.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    time.sleep(1)  # attached before the first webhook
    return profilers


def profile_stop(profilers: list[subprocess.Popen[bytes]]) -> None:
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for profiler in profilers:
        try:
            profiler.wait(timeout=60)
        except subprocess.TimeoutExpired:
            profiler.kill()


# --- set-up of each database flavour -------------------------------------------------


@dataclass
class Backend:
    app_env: dict[str, str]
    describe: str
    cleanup: list[Callable[[], None]] = field(default_factory=list)
    # The database server's processes working for this run, by pid.
    server_pids: Callable[[], dict[int, str]] = dict


def backend_sqlite(scratch: Path) -> Backend:
    env = {
        "DATABASE_URL": f"sqlite:///{scratch / 'app.sqlite3'}",
        "HUEY_SQLITE_PATH": str(scratch / "queue.sqlite3"),
        "REDIS_URL": "",
    }
    return Backend(env, f"SQLite {sqlite3.sqlite_version} + SQLite queue")


def backend_postgres(server: str, redis_url: str) -> Backend:
    import psycopg
    import redis

    name = f"mc_pipeline_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        row = admin.execute("SHOW server_version").fetchone()
        limit = admin.execute("SHOW max_connections").fetchone()

    def drop() -> None:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    queue = redis.Redis.from_url(redis_url)
    queue.flushdb()

    def flush() -> None:
        queue.flushdb()

    watcher: list[psycopg.Connection[Any]] = []

    def backends() -> dict[int, str]:
        """PostgreSQL's backend processes connected to the scratch database (on this
        machine, so /proc has them); looked up at every sample, from one thread."""
        if not watcher:
            watcher.append(psycopg.connect(f"{server}/postgres", autocommit=True))
        rows = (
            watcher[0]
            .execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))
            .fetchall()
        )
        return {int(pid): "postgres backends" for (pid,) in rows}

    env = {"DATABASE_URL": f"{server}/{name}", "REDIS_URL": redis_url, "HUEY_SQLITE_PATH": ""}
    describe = (
        f"PostgreSQL {row[0] if row else '?'} (max_connections {limit[0] if limit else '?'}) "
        f"+ Redis {redis_url}"
    )

    def close_watcher() -> None:
        for connection in watcher:
            connection.close()

    return Backend(env, describe, [close_watcher, drop, flush], backends)


# --- main --------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--users", type=int, default=200, help="end users (N)")
    parser.add_argument("--messages", type=int, default=5, help="messages per user (M)")
    parser.add_argument("--workers", type=int, default=64, help="consumer threads (W)")
    parser.add_argument("--latency-ms", type=int, default=1000, help="each MKA1 call (L)")
    parser.add_argument("--senders", type=int, default=8, help="threads posting webhooks")
    parser.add_argument("--web-workers", type=int, default=2, help="app gunicorn processes")
    parser.add_argument("--web-threads", type=int, default=8, help="threads per app process")
    parser.add_argument(
        "--sandbox-threads", type=int, default=0, help="sandbox gunicorn threads (W + 32)"
    )
    parser.add_argument(
        "--postgres", default="postgres://postgres@127.0.0.1:5432", help="server for --db postgres"
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12", help="flushed before/after")
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch directory (logs, SQLite files)"
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="profile the consumer, app and sandbox workers over the run with py-spy "
        "(pip install py-spy): where each holds the GIL, as raw folded stacks in DIR",
    )
    args = parser.parse_args()
    if min(args.users, args.messages, args.workers, args.senders, args.web_workers) < 1:
        parser.error("users, messages, workers, senders and web workers must be at least 1")
    if args.latency_ms < 0:
        parser.error("--latency-ms must be 0 or more")
    if args.users * args.messages > 100_000 or args.workers > 512:
        parser.error("keep it reasonable: at most 100,000 messages and 512 workers")
    sandbox_threads = args.sandbox_threads or args.workers + 32

    scratch = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    backend: Backend | None = None
    services: list[Service] = []
    try:
        backend = backend_postgres(args.postgres, args.redis) if args.db == "postgres" else None
        backend = backend or backend_sqlite(scratch)
        return run(args, scratch, backend, sandbox_threads, services)
    finally:
        if services:
            stop(services)
        if "django.db" in sys.modules:
            from django.db import connections

            connections.close_all()
        for cleanup in backend.cleanup if backend else []:
            try:
                cleanup()
            except Exception as exc:  # report, and go on cleaning up
                print(f"cleanup failed: {exc}", file=sys.stderr)
        if args.keep:
            print(f"logs and SQLite files kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def run(
    args: argparse.Namespace,
    scratch: Path,
    backend: Backend,
    sandbox_threads: int,
    services: list[Service],
) -> int:
    users, messages, workers = args.users, args.messages, args.workers
    total = users * messages
    sandbox_port, app_port = benchkit.free_port(), benchkit.free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    app_url = f"http://127.0.0.1:{app_port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MKA1_", "WHATSAPP_"))}
    base["DJANGO_SETTINGS_MODULE"] = "multichannel.settings"
    sandbox_db = scratch / "sandbox.sqlite3"
    sandbox_env = {
        **base,
        "DEBUG": "true",
        "SANDBOX": "true",
        "DATABASE_URL": f"sqlite:///{sandbox_db}",
        "REDIS_URL": "",
        "HUEY_SQLITE_PATH": str(scratch / "sandbox-queue.sqlite3"),
        "SANDBOX_MKA1_LATENCY_MS": str(args.latency_ms),
        "LOG_LEVEL": "WARNING",
    }
    app_env = {
        **base,
        **backend.app_env,
        "DEBUG": "false",
        "SANDBOX": "false",
        "SECRET_KEY": "pipeline-bench-" + uuid.uuid4().hex * 2,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",  # plain HTTP on loopback
        "HUEY_IMMEDIATE": "false",
        "LOG_FORMAT": "json",
        "MKA1_API_KEY": "pipeline-mka1-key-not-real",
        "MKA1_BASE_URL": f"{sandbox_url}/sandbox/mka1",
        "WHATSAPP_GRAPH_URL": f"{sandbox_url}/sandbox/graph",
        "WHATSAPP_VERIFY_TOKEN": "pipeline-verify-token",
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_TOKEN": "pipeline-graph-token-not-real",
        "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "WEB_CONCURRENCY": str(args.web_workers),
        "GUNICORN_THREADS": str(args.web_threads),
        "GUNICORN_BIND": f"127.0.0.1:{app_port}",
    }
    migrate(sandbox_env)
    migrate(app_env)

    # This process reads the app's database (progress, checks) with the app's settings.
    os.environ.update(app_env)
    import django

    django.setup()

    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {backend.describe}; "
        f"{users} users x {messages} messages, {workers} consumer threads, "
        f"MKA1 latency {args.latency_ms} ms"
    )
    logs = scratch
    gunicorn = [sys.executable, "-m", "gunicorn"]
    services.append(
        start(
            "sandbox",
            [
                *gunicorn,
                "--workers=1",
                "--worker-class=gthread",
                f"--threads={sandbox_threads}",
                f"--bind=127.0.0.1:{sandbox_port}",
                "--timeout=120",
                "--keep-alive=30",
                "--graceful-timeout=10",
                f"--chdir={ROOT}",
                f"--pythonpath={ROOT / 'bench'}",
                "pipeline:sandbox_app()",
            ],
            sandbox_env,
            logs,
            gunicorn=True,
        )
    )
    services.append(
        start(
            "app",
            [*gunicorn, "-c", "python:multichannel.gunicorn", "multichannel.wsgi"],
            app_env,
            logs,
            gunicorn=True,
        )
    )
    consumer = start(
        "consumer",
        [
            sys.executable,
            "manage.py",
            "run_huey",
            "--workers",
            str(workers),
            "--worker-type",
            "thread",
        ],
        app_env,
        logs,
        stop_signal=signal.SIGINT,  # Huey's graceful stop
    )
    services.append(consumer)
    wait_until_up(services, [f"{sandbox_url}/healthz", f"{app_url}/healthz"], consumer)

    def others() -> dict[int, str]:
        return {os.getpid(): "this script (webhooks, polling)", **backend.server_pids()}

    sampler = Sampler(services, sandbox_url, others)
    sampler.mark_start()
    sampling = threading.Thread(target=sampler.run, daemon=True)
    sampling.start()
    latency = args.latency_ms / 1000
    rounds_bound = math.ceil(users / workers) * (messages + 1) * latency
    fluid_bound = users / min(users, workers) * (messages + 1) * latency
    timeout = 120 + 4 * rounds_bound + total * 0.5

    profilers = profile_start(args.py_spy, sampler) if args.py_spy else []
    try:
        posted = post_webhooks(app_url, users, messages, args.senders)
        if posted.failures:
            raise SystemExit(f"{len(posted.failures)} webhooks failed: {posted.failures[:5]}")
        wait_answered(total, timeout, services)
    finally:
        profile_stop(profilers)
    sampler.stop.set()
    sampling.join()
    sampler.sample()
    counters = inflight_counters(sandbox_url) or {"peak": {}, "total": {}}

    from multichannel.models import UserMessage

    delivered = list(
        UserMessage.objects.filter(state=UserMessage.State.DELIVERED).values_list(
            "created_at", "updated_at"
        )
    )
    last = max(updated for _, updated in delivered).timestamp()
    wall = last - posted.started
    latencies = [(updated - created).total_seconds() for created, updated in delivered]
    during = [s for s in sampler.inflight if posted.started <= s[0] <= last]
    mean_mka1 = statistics.fmean(s[1] for s in during) if during else 0.0
    mean_graph = statistics.fmean(s[2] for s in during) if during else 0.0
    peak = counters["peak"]

    problems = verify(users, messages, sandbox_db)
    verified, verify_report = benchkit.verify_audit(app_env, total + users)
    if not verified:
        problems.append(verify_report)
    problems += stop(services)
    services.clear()

    print()
    header = (
        "| db | users x msgs | W | L ms | wall s | msg/s | bound s (rounds / fluid) "
        "| reply p50 / p99 / max s | MKA1 in flight peak / mean | Graph peak / mean "
        "| webhooks s (p50 / p99 ms) |"
    )
    print(header)
    print("|---|---|" + "---:|" * (header.count("|") - 3))
    print(
        f"| {args.db} | {users} x {messages} | {workers} | {args.latency_ms} | {wall:.2f} "
        f"| {total / wall:.1f} | {rounds_bound:.1f} / {fluid_bound:.1f} "
        f"| {percentile(latencies, 0.5):.2f} / {percentile(latencies, 0.99):.2f} / "
        f"{max(latencies):.2f} "
        f"| {peak.get('mka1', 0)} / {mean_mka1:.1f} | {peak.get('graph', 0)} / {mean_graph:.1f} "
        f"| {posted.finished - posted.started:.2f} "
        f"({percentile(posted.seconds, 0.5) * 1000:.0f} / "
        f"{percentile(posted.seconds, 0.99) * 1000:.0f}) |"
    )
    print()
    print(f"per process, over the run ({wall:.1f} s from the first webhook to the last reply):")
    print()
    print("| process | pid | CPU s | CPU (share of one core) | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    backends = [u for u in sampler.usage.values() if u.role == "postgres backends"]
    for pid, usage in sorted(sampler.usage.items(), key=lambda item: (item[1].role, item[0])):
        if usage.role == "postgres backends":
            continue
        cpu = usage.cpu - (usage.cpu_at_start or 0.0)
        print(
            f"| {usage.role} | {pid} | {cpu:.1f} | {cpu / wall:.0%} | {usage.hwm_kib / 1024:.1f} |"
        )
    if backends:
        # Their RSS counts the shared buffers they touched: not comparable, left out.
        cpu = sum(u.cpu - (u.cpu_at_start or 0.0) for u in backends)
        print(
            f"| postgres backends (this database) | {len(backends)} pids | {cpu:.1f} "
            f"| {cpu / wall:.0%} | - |"
        )
    consumer_cpu = sum(
        u.cpu - (u.cpu_at_start or 0.0) for u in sampler.usage.values() if u.role == "consumer"
    )
    all_cpu = sum(u.cpu - (u.cpu_at_start or 0.0) for u in sampler.usage.values())
    print()
    print(
        f"consumer: {consumer_cpu / total * 1000:.0f} ms of CPU per message; all of the above: "
        f"{all_cpu:.1f} CPU s, {all_cpu / wall:.2f} of {os.cpu_count()} cores on average"
    )
    mka1_calls = counters["total"].get("mka1", 0)
    graph_calls = counters["total"].get("graph", 0)
    print()
    print(
        f"sandbox served {mka1_calls} MKA1 requests (expected {total + users}: one "
        f"conversation per user, one response per message) and {graph_calls} Graph requests "
        "(replies and read receipts)"
    )
    for name, counts in log_problems(sorted(scratch.glob("*.log"))).items():
        print(f"log lines in {name}: " + ", ".join(f"{k} x{n}" for k, n in counts.items()))
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if problems:
        print("\n".join(problems[:30]), file=sys.stderr)
        print(f"FAILED: {len(problems)} checks", file=sys.stderr)
        return 1
    print(
        "checks passed: every message stored once, answered by one turn and one MKA1 "
        "response, delivered once, in order per user; one responses.create audit event "
        "per message; verify_audit OK"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
