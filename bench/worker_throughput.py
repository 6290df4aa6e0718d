"""Throughput of one queue consumer with thread workers against a slow MKA1, in order.

    DEBUG=true .venv/bin/python bench/worker_throughput.py \\
        --users 20 --messages 3 --latency-ms 300 --workers 1 4 8 16

Everything runs on scratch files in a temporary directory (removed at the end): a SQLite
database migrated once into a template, and a SQLite queue. For each worker count W the
database and the queue are re-created from scratch, one `manage.py run_huey --workers W
--worker-type thread` subprocess is started, and once it has logged that it started,
N users x M messages are delivered as signed WhatsApp webhooks through Django's test
client in this process (round robin: every user's first message, then every user's
second, ...). The webhook only stores the message and enqueues a task. The wall time
runs from the first webhook until the database shows every message delivered; the
consumer is then stopped with SIGINT (it must exit 0).

The sandbox plays MKA1 and the Graph API in the consumer process; every MKA1 call
(conversations.create once per user, responses.create once per message) sleeps
SANDBOX_MKA1_LATENCY_MS first, so the calls are latency-bound like the real service's.
One user's turns are strictly sequential (M+1 calls), so the latency-only lower bound
of a run is ceil(N / W) x (M + 1) x L.

After each run the script checks, and exits non-zero if any check fails:

- every user's replies reached the Graph API stand-in in the order the user sent them;
- every conversation's Turn chain is linear (one root, each previous_response_id
  continued once) and walks the user's messages in the order sent;
- exactly one MKA1 response per message (sandbox responses, turns, audit events
  `responses.create`) and one conversation per user; every message answered by its
  own turn.

Columns: "msg/s" is N x M / wall; "speedup" is against the first worker count given;
"latency bound" is the bound above; "reply p50 / max" is each message's time from
being stored to being delivered (its row's created_at to updated_at); "webhooks" is the
time this process spent delivering all webhooks, with the slowest one in ms; "retried"
counts messages that needed a retry (their `error` is set); "stop" is how long the
consumer took to exit after SIGINT.

"peak in flight" is estimated from the sandbox's rows: each MKA1 call is taken to have
run during the L milliseconds before its row (a stored response or conversation) was
written, and the largest number of overlapping intervals is reported. "consumer CPU" is
the consumer process's user+system CPU time over the measured window (from /proc),
as a share of one core: near 100 % means the one process (one GIL) is the limit.

With --idle-probe S, after each run the consumer is left idle for S seconds, then one
message from a new user is sent and the time until it is delivered is reported. Huey's
SQLite queue is polled, and an idle worker's polling interval backs off to 10 s.
"""

import argparse
import logging
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
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCRATCH = Path(tempfile.mkdtemp(prefix="worker-bench-"))
DB = SCRATCH / "db.sqlite3"
TEMPLATE = SCRATCH / "template.sqlite3"
QUEUE = SCRATCH / "queue.sqlite3"
# Everything local: the sandbox stands in for MKA1 and Graph, the queue is SQLite.
# Set explicitly (not just left unset) so that a .env file cannot point elsewhere.
ENV = {
    "DJANGO_SETTINGS_MODULE": "multichannel.settings",
    "DEBUG": "true",
    "SANDBOX": "true",
    "HUEY_IMMEDIATE": "false",
    "DATABASE_URL": f"sqlite:///{DB}",
    "HUEY_SQLITE_PATH": str(QUEUE),
    "REDIS_URL": "",
    "MKA1_BASE_URL": "sandbox://mka1",
    "WHATSAPP_GRAPH_URL": "sandbox://graph",
    "LOG_FORMAT": "plain",
    "LOG_LEVEL": "INFO",
}
os.environ.update(ENV)

import django  # noqa: E402

django.setup()
logging.disable(logging.INFO)  # this process's webhook log lines; the consumer keeps its own

from django.conf import settings  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.test import Client  # noqa: E402
from huey.contrib.djhuey import HUEY  # noqa: E402

from audit.models import AuditEvent  # noqa: E402
from multichannel.models import Conversation, Turn, UserMessage  # noqa: E402
from multichannel.sandbox import whatsapp as wa  # noqa: E402
from multichannel.sandbox.mka1_views import reply_text  # noqa: E402
from multichannel.sandbox.models import (  # noqa: E402
    SandboxConversation,
    SandboxGraphMessage,
    SandboxResponse,
)

START_TIMEOUT = 60.0  # seconds for the consumer to log that it started
STOP_TIMEOUT = 30.0  # seconds for it to exit after SIGINT
POLL = 0.02  # seconds between looks at the database


@dataclass
class Run:
    workers: int
    wall: float
    webhook_total: float
    webhook_max: float
    latency_p50: float
    latency_max: float
    peak_in_flight: int
    cpu_share: float | None
    retried: int
    log_problems: int
    stop_seconds: float
    idle_pickup: float | None = None


def phone(user: int) -> str:
    return f"1555{user:07d}"


def text_of(user: int, message: int) -> str:
    return f"user {user} message {message}"


def fresh_state() -> None:
    """An empty, migrated database (a copy of the template) and an empty queue."""
    connections.close_all()
    HUEY.storage.close()
    for base in (DB, QUEUE):
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{base}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(TEMPLATE, DB)
    HUEY.storage.initialize_schema()
    if UserMessage.objects.exists() or HUEY.pending_count() or HUEY.scheduled_count():
        raise SystemExit("the scratch database or queue is not empty")


def migrate_template() -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{TEMPLATE}"}
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--no-input", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    # Fold the WAL into the file, so that copying the one file copies everything.
    with sqlite3.connect(TEMPLATE) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode=DELETE")
    db.close()


def consumer_start(workers: int, latency_ms: int, log: IO[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SANDBOX_MKA1_LATENCY_MS": str(latency_ms)}
    command = [sys.executable, str(ROOT / "manage.py"), "run_huey"]
    command += ["--workers", str(workers), "--worker-type", "thread"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log_path = Path(log.name)
    deadline = time.monotonic() + START_TIMEOUT
    while "Huey consumer started" not in log_path.read_text(errors="replace"):
        if process.poll() is not None:
            raise SystemExit(f"the consumer exited at start:\n{log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            consumer_stop(process)
            raise SystemExit("the consumer did not start in time")
        time.sleep(0.05)
    return process


def consumer_stop(process: subprocess.Popen[bytes]) -> float:
    """SIGINT (Huey's graceful stop); seconds until it exited. Kills it after a while."""
    started = time.monotonic()
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
            raise SystemExit(f"the consumer ignored SIGINT for {STOP_TIMEOUT:.0f} s") from None
    if process.returncode != 0:
        raise SystemExit(f"the consumer exited with {process.returncode}")
    return time.monotonic() - started


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def webhook_send(client: Client, user: int, message: int, timestamp: int) -> float:
    event = wa.message_event(
        wa_id=phone(user), text=text_of(user, message), timestamp=timestamp, name=f"User {user}"
    )
    body = wa.encode(wa.webhook_payload([event], phone_number_id=settings.WHATSAPP_PHONE_NUMBER_ID))
    started = time.perf_counter()
    response = client.post(
        "/whatsapp/webhook",
        data=body,
        content_type="application/json",
        headers={"X-Hub-Signature-256": wa.sign(body, settings.WHATSAPP_APP_SECRET)},
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"webhook answered {response.status_code}: {response.content[:200]!r}")
    return elapsed


def wait_delivered(process: subprocess.Popen[bytes], total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = dict(UserMessage.objects.values_list("state").annotate(n=Count("id")).order_by())
        if states.get(UserMessage.State.DELIVERED, 0) == total:
            return
        if states.get(UserMessage.State.FAILED):
            raise SystemExit(f"messages failed: {states}")
        if process.poll() is not None:
            raise SystemExit(f"the consumer exited ({process.returncode}) mid-run: {states}")
        if time.monotonic() > deadline:
            raise SystemExit(f"not all delivered after {timeout:.0f} s: {states}")
        time.sleep(POLL)


def peak_overlap(ends: list[datetime], length: timedelta) -> int:
    points = sorted([(end - length, 1) for end in ends] + [(end, -1) for end in ends])
    peak = current = 0
    for _, step in points:
        current += step
        peak = max(peak, current)
    return peak


def verify(users: int, messages: int) -> list[str]:
    """Every check the run must pass; the problems found (empty when all hold)."""
    problems: list[str] = []
    total = users * messages
    for user in range(users):
        expected = [text_of(user, m) for m in range(messages)]
        sent = [
            body["text"]["body"]
            for body in SandboxGraphMessage.objects.filter(
                kind="text", recipient=phone(user)
            ).values_list("body", flat=True)
        ]
        if sent != [reply_text(text) for text in expected]:
            problems.append(f"user {user}: replies out of order or missing: {sent}")
    conversations = list(Conversation.objects.all())
    if len(conversations) != users:
        problems.append(f"{len(conversations)} conversations for {users} users")
    for conversation in conversations:
        turns = list(Turn.objects.filter(conversation=conversation))
        by_previous = {turn.previous_response_id: turn for turn in turns}
        if len(by_previous) != len(turns):
            problems.append(f"{conversation}: the chain forks")
            continue
        chain: list[str] = []
        head: str | None = None
        while head in by_previous and len(chain) <= len(turns):
            turn = by_previous[head]
            chain.append(turn.input_text)
            head = turn.response_id
        if head != conversation.previous_response_id or len(chain) != len(turns):
            problems.append(f"{conversation}: the chain is not one linear walk")
        sent_order = list(
            UserMessage.objects.filter(end_user_id=conversation.end_user_id)
            .order_by("sent_at", "id")
            .values_list("text", flat=True)
        )
        if chain != sent_order:
            problems.append(f"{conversation}: turns {chain} for messages {sent_order}")
    counts = {
        "sandbox responses": SandboxResponse.objects.count(),
        "turns": Turn.objects.count(),
        "audit responses.create": AuditEvent.objects.filter(action="responses.create").count(),
        "messages with a turn": UserMessage.objects.filter(turn__isnull=False).count(),
    }
    for name, count in counts.items():
        if count != total:
            problems.append(f"{count} {name} for {total} messages")
    created = AuditEvent.objects.filter(action="conversations.create").count()
    if SandboxConversation.objects.count() != users or created != users:
        problems.append(f"{created} conversations created for {users} users")
    return problems


def log_problem_lines(text: str) -> int:
    markers = ("Traceback", "ERROR", "WARNING", "locked")
    return sum(1 for line in text.splitlines() if any(m in line for m in markers))


def idle_probe(process: subprocess.Popen[bytes], client: Client, user: int, idle: float) -> float:
    """Seconds from one webhook to its delivery after the consumer sat idle."""
    time.sleep(idle)
    total = UserMessage.objects.count() + 1
    started = time.perf_counter()
    webhook_send(client, user, 0, int(time.time()))
    wait_delivered(process, total, timeout=60)
    return time.perf_counter() - started


def run_once(args: argparse.Namespace, workers: int) -> Run:
    fresh_state()
    users, messages, latency = args.users, args.messages, args.latency_ms / 1000
    total = users * messages
    # Generous: the one-worker time, three times over, plus start-up slack.
    timeout = 30 + 3 * users * (messages + 1) * latency + total * 0.1
    log_path = SCRATCH / f"consumer-{workers}.log"
    with log_path.open("w") as log:
        process = consumer_start(workers, args.latency_ms, log)
        try:
            client = Client()
            base = int(time.time())
            cpu_before = cpu_seconds(process.pid)
            started = time.perf_counter()
            sends = [
                webhook_send(client, user, message, base + message)
                for message in range(messages)
                for user in range(users)
            ]
            webhook_total = time.perf_counter() - started
            wait_delivered(process, total, timeout)
            wall = time.perf_counter() - started
            cpu_after = cpu_seconds(process.pid)
            problems = verify(users, messages)
            if problems:
                print("\n".join(problems[:20]), file=sys.stderr)
                raise SystemExit(f"W={workers}: {len(problems)} checks failed")
            latencies = sorted(
                (updated - created).total_seconds()
                for created, updated in UserMessage.objects.values_list("created_at", "updated_at")
            )
            ends = list(SandboxResponse.objects.values_list("created_at", flat=True))
            ends += list(SandboxConversation.objects.values_list("created_at", flat=True))
            retried = UserMessage.objects.exclude(error="").count()
            # The probe's user is a new one (number `users`), outside the checked run.
            idle = idle_probe(process, client, users, args.idle_probe) if args.idle_probe else None
        finally:
            stop_seconds = consumer_stop(process)
    cpu = None
    if cpu_before is not None and cpu_after is not None:
        cpu = (cpu_after - cpu_before) / wall
    return Run(
        workers=workers,
        wall=wall,
        webhook_total=webhook_total,
        webhook_max=max(sends),
        latency_p50=latencies[len(latencies) // 2],
        latency_max=latencies[-1],
        peak_in_flight=peak_overlap(ends, timedelta(milliseconds=args.latency_ms)),
        cpu_share=cpu,
        retried=retried,
        log_problems=log_problem_lines(log_path.read_text(errors="replace")),
        stop_seconds=stop_seconds,
        idle_pickup=idle,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20, help="end users (N)")
    parser.add_argument("--messages", type=int, default=3, help="messages per user (M)")
    parser.add_argument("--latency-ms", type=int, default=300, help="each MKA1 call (L)")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 4, 8, 16], help="worker threads (W)"
    )
    parser.add_argument(
        "--idle-probe", type=float, default=0, help="seconds idle before a one-message probe"
    )
    args = parser.parse_args()
    if args.users < 1 or args.messages < 1 or args.latency_ms < 0 or min(args.workers) < 1:
        parser.error("users, messages and workers must be at least 1, latency at least 0")
    if args.users * args.messages > 10_000 or max(args.workers) > 256 or args.idle_probe > 600:
        parser.error("keep it small: at most 10,000 messages, 256 workers, 600 s idle")

    migrate_template()
    with connection.cursor() as cursor:
        cursor.execute("SELECT sqlite_version()")
        row = cursor.fetchone()
    print(
        f"python {platform.python_version()}, sqlite {row[0] if row else '?'}, "
        f"{os.cpu_count()} CPUs; {args.users} users x {args.messages} messages, "
        f"MKA1 latency {args.latency_ms} ms"
    )
    print()
    header = (
        "| workers | wall s | msg/s | speedup | latency bound s | peak in flight "
        "| reply p50 / max s | webhooks s (max ms) | consumer CPU | retried | stop s |"
    )
    if args.idle_probe:
        header += " idle pickup s |"
    print(header)
    print("|" + "---:|" * (header.count("|") - 1))
    first: Run | None = None
    for workers in args.workers:
        run = run_once(args, workers)
        first = first or run
        bound = math.ceil(args.users / workers) * (args.messages + 1) * args.latency_ms / 1000
        cpu = "-" if run.cpu_share is None else f"{run.cpu_share:.0%}"
        line = (
            f"| {workers} | {run.wall:.2f} | {args.users * args.messages / run.wall:.1f} | "
            f"{first.wall / run.wall:.1f}x | {bound:.1f} | {run.peak_in_flight} | "
            f"{run.latency_p50:.2f} / {run.latency_max:.2f} | "
            f"{run.webhook_total:.2f} ({run.webhook_max * 1000:.0f}) | {cpu} | "
            f"{run.retried} | {run.stop_seconds:.1f} |"
        )
        if run.idle_pickup is not None:
            line += f" {run.idle_pickup:.2f} |"
        print(line, flush=True)
        if run.log_problems:
            print(f"  (consumer log: {run.log_problems} warning/error lines)", flush=True)
    print()
    print("every run: replies in order per user, linear turn chains, one MKA1 response")
    print("per message, consumer stopped by SIGINT with exit status 0")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    try:
        main()
    finally:
        connections.close_all()
        HUEY.storage.close()
        shutil.rmtree(SCRATCH, ignore_errors=True)
