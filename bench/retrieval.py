"""Added latency of the web retrieval, GET /api/multichannel/<response_id>, over MKA1's own
responses.get (played by the sandbox over HTTP): sequential pairs of the two requests on
keep-alive connections, the app under gunicorn in the production profile with a response
stored the real way (webhook, consumer). Percentiles of both, their difference, CPU per
request; every retrieval must be answered and audited.

    .venv/bin/python bench/retrieval.py --db sqlite
    .venv/bin/python bench/retrieval.py --db postgres --requests 2000 --warmup 200

Results and method: docs/benchmarks.md.
"""

import argparse
import os
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import benchkit  # bench/ is first on sys.path; benchkit puts the project root next
import requests

from tests.support.stack import APP_SECRET, MKA1_API_KEY, Stack
from tests.support.webhooks import webhook_send

THROTTLE = "100000/min"
QUESTION = "What does the benchmark measure?"


@dataclass
class Stored:
    end_user_id: str
    response_id: str
    conversation_id: str


def answer_one_webhook(stack: Stack) -> Stored:
    """Store a response the real way: webhook in, one consumer answers it, then stops."""
    from multichannel.models import UserMessage
    from multichannel.sandbox import whatsapp as wa

    wamid = wa.wamid()
    event = wa.message_event(wa_id="15559990001", text=QUESTION, message_id=wamid)
    answer = webhook_send(
        stack.app_url, wa.encode(wa.webhook_payload([event])), secret=APP_SECRET, timeout=30
    )
    if answer.status_code != 200:
        raise SystemExit(f"the webhook answered {answer.status_code}: {answer.text[:200]}")
    stack.start("consumer")
    deadline = time.monotonic() + 90
    while True:
        message = UserMessage.objects.filter(external_id=wamid).first()
        if message is not None and message.state == UserMessage.State.DELIVERED:
            break
        if message is not None and message.state == UserMessage.State.FAILED:
            raise SystemExit(f"the message failed: {message.error}")
        if stack.processes["consumer"].poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the consumer did not answer the webhook:\n{stack.log_tail()}")
        time.sleep(0.1)
    status = stack.kill("consumer", signal.SIGINT)  # Huey's graceful stop
    if status != 0:
        raise SystemExit(f"the consumer exited with {status}")
    turn = message.turn
    if turn is None:
        raise SystemExit("the delivered message has no turn")
    return Stored(turn.end_user_id, turn.response_id, turn.conversation.mka1_conversation_id)


def session_cookie(end_user_id: str) -> tuple[str, str]:
    """A signed-in end user's session, as the sign-in link leaves it: (name, value)."""
    from django.conf import settings
    from django.contrib.sessions.backends.db import SessionStore

    from web.auth import SESSION_KEY

    session = SessionStore()
    session[SESSION_KEY] = end_user_id
    session.create()
    assert session.session_key is not None
    return settings.SESSION_COOKIE_NAME, session.session_key


def queries_per_retrieval(stored: Stored, cookie: tuple[str, str]) -> list[str]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(SERVER_NAME="127.0.0.1")
    client.cookies[cookie[0]] = cookie[1]
    with CaptureQueriesContext(connection) as captured:
        answer = client.get(f"/api/multichannel/{stored.response_id}")
    if answer.status_code != 200:
        raise SystemExit(f"in-process retrieval answered {answer.status_code}")
    return [query["sql"] for query in captured.captured_queries]


def audit_retrievals(end_user_id: str) -> int:
    from audit.models import AuditEvent

    return AuditEvent.objects.filter(action="responses.get", end_user_id=end_user_id).count()


def measure(
    args: argparse.Namespace,
    app: str,
    sandbox: str,
    stored: Stored,
    cookie: tuple[str, str],
    roots: dict[str, int | None],
) -> tuple[list[float], list[float], dict[str, float | None], list[str]]:
    app_session = requests.Session()
    app_session.trust_env = False
    app_session.headers["Cookie"] = f"{cookie[0]}={cookie[1]}"
    mka1_session = requests.Session()
    mka1_session.trust_env = False
    mka1_session.headers.update(
        {"Authorization": f"Bearer {MKA1_API_KEY}", "X-On-Behalf-Of": stored.end_user_id}
    )
    app_url = f"{app}/api/multichannel/{stored.response_id}"
    mka1_url = f"{sandbox}/sandbox/mka1/api/v1/llm/responses/{stored.response_id}"
    problems: list[str] = []

    def app_get() -> float:
        started = time.perf_counter()
        answer = app_session.get(app_url, timeout=30)
        elapsed = time.perf_counter() - started
        body: Any = answer.json() if answer.status_code == 200 else None
        if (
            not isinstance(body, dict)
            or body.get("response_id") != stored.response_id
            or body.get("conversation_id") != stored.conversation_id
        ):
            problems.append(f"app answered {answer.status_code}: {answer.text[:200]}")
        return elapsed * 1000

    def mka1_get() -> float:
        started = time.perf_counter()
        answer = mka1_session.get(mka1_url, timeout=30)
        elapsed = time.perf_counter() - started
        body: Any = answer.json() if answer.status_code == 200 else None
        if not isinstance(body, dict) or body.get("id") != stored.response_id:
            problems.append(f"sandbox answered {answer.status_code}: {answer.text[:200]}")
        return elapsed * 1000

    def pairs(n: int) -> tuple[list[float], list[float]]:
        app_ms, mka1_ms = [], []
        for i in range(n):
            if i % 2 == 0:
                app_ms.append(app_get())
                mka1_ms.append(mka1_get())
            else:
                mka1_ms.append(mka1_get())
                app_ms.append(app_get())
        return app_ms, mka1_ms

    pairs(args.warmup)
    before = benchkit.cpu_sample(roots)
    app_ms, mka1_ms = pairs(args.requests)
    after = benchkit.cpu_sample(roots)
    return (
        app_ms,
        mka1_ms,
        benchkit.cpu_shares(before, after) | {"wall": after.at - before.at},
        problems,
    )


def row(name: str, values: list[float], cpu_ms: float | None) -> str:
    cpu = "-" if cpu_ms is None else f"{cpu_ms:.2f}"
    return (
        f"| {name} | {len(values)} | {benchkit.percentile(values, 50):.2f} | "
        f"{benchkit.percentile(values, 90):.2f} | {benchkit.percentile(values, 99):.2f} | "
        f"{sum(values) / len(values):.2f} | {max(values):.2f} | {cpu} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--requests", type=int, default=500, help="measured pairs")
    parser.add_argument("--warmup", type=int, default=50, help="pairs before measuring")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: the config's)")
    parser.add_argument("--threads", type=int, help="threads per worker (default: the config's)")
    parser.add_argument(
        "--sandbox-server",
        choices=("runserver", "gunicorn"),
        default="runserver",
        help="what serves the sandbox (see the note on runserver's keep-alive)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    if args.requests < 1 or args.warmup < 0:
        parser.error("--requests must be at least 1, --warmup at least 0")

    with benchkit.scratch("retrieval-bench-", keep=args.keep) as scratch, ExitStack() as cleanup:
        print(benchkit.machine_facts(), flush=True)
        stack = benchkit.stack_on(
            args.db,
            scratch,
            cleanup,
            prefix="mc_bench_retrieval",
            app_env={
                # The default read throttles would answer 429 long before the end.
                "API_THROTTLE_READ": THROTTLE,
                "API_RETRIEVALS_PER_DAY": "1000000",
                "LOG_LEVEL": "INFO",
                "HUEY_WORKERS": "1",
                **benchkit.gunicorn_size(args.workers, args.threads),
            },
            sandbox_env={"SANDBOX_MKA1_LATENCY_MS": "0"},
        )
        if args.sandbox_server == "gunicorn":  # the product's configuration, on its port
            stack.commands["sandbox"] = list(stack.commands["web"])
            stack.sandbox_env["GUNICORN_BIND"] = f"127.0.0.1:{stack.sandbox_port}"
        workers, threads = benchkit.gunicorn_defaults(stack.app_env)
        stack.manage("migrate", "--no-input", "-v", "0", sandbox=True)
        stack.manage("migrate", "--no-input", "-v", "0")
        os.environ.update(stack.app_env)
        import django

        django.setup()
        stack.start("sandbox")
        stack.start("web")
        app, sandbox = stack.app_url, stack.sandbox_url

        stored = answer_one_webhook(stack)
        cookie = session_cookie(stored.end_user_id)
        queries = queries_per_retrieval(stored, cookie)
        audited_before = audit_retrievals(stored.end_user_id)
        from django.db import connections

        connections.close_all()

        stats = benchkit.proc_stats()
        roots: dict[str, int | None] = {
            "gunicorn": stack.processes["web"].pid,
            "sandbox": stack.processes["sandbox"].pid,
            "postgres": benchkit.find_root(stats, "postgres") if args.db == "postgres" else None,
        }
        app_ms, mka1_ms, cpu, problems = measure(args, app, sandbox, stored, cookie, roots)
        audited = audit_retrievals(stored.end_user_id) - audited_before
        expected = args.warmup + args.requests
        if audited != expected:
            problems.append(f"{audited} responses.get audit events for {expected} retrievals")
        verified, verify_report = stack.verify_audit()
        if not verified:
            problems.append(verify_report)

        store = "PostgreSQL + Redis" if args.db == "postgres" else "SQLite (+ SQLite queue)"
        print(
            f"app: gunicorn -c python:multichannel.gunicorn, gthread, {workers} workers x "
            f"{threads} threads, DEBUG=false, {store}; MKA1 = the sandbox "
            f"({args.sandbox_server}, DEBUG=true, SQLite) over HTTP on loopback; "
            f"{args.requests} measured pairs after {args.warmup} warm-up pairs, sequential, "
            f"keep-alive"
        )
        print(
            f"response {stored.response_id} of {stored.end_user_id}, stored by a webhook "
            f"answered by run_huey; SQL statements per retrieval (in process): {len(queries)}"
        )
        for sql in queries:
            print(f"    {sql[:110]}")
        print()
        wall = cpu.get("wall") or 0.0
        gunicorn_cpu = cpu.get("gunicorn")
        sandbox_cpu = cpu.get("sandbox")
        app_cpu_ms = None if gunicorn_cpu is None else gunicorn_cpu * wall * 1000 / len(app_ms)
        served = len(app_ms) + len(mka1_ms)  # the sandbox also serves each app request
        sandbox_cpu_ms = None if sandbox_cpu is None else sandbox_cpu * wall * 1000 / served
        print("| requests to | n | p50 ms | p90 ms | p99 ms | mean ms | max ms | CPU ms/req |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        print(row("sandbox responses.get (MKA1 stand-in, direct)", mka1_ms, sandbox_cpu_ms))
        print(row("app GET /api/multichannel/<id>", app_ms, app_cpu_ms))
        added = [
            benchkit.percentile(app_ms, q) - benchkit.percentile(mka1_ms, q) for q in (50, 90, 99)
        ]
        mean_added = sum(app_ms) / len(app_ms) - sum(mka1_ms) / len(mka1_ms)
        print(
            f"| added: app - sandbox (difference of percentiles) | {len(app_ms)} | "
            f"{added[0]:.2f} | {added[1]:.2f} | {added[2]:.2f} | {mean_added:.2f} | - | - |"
        )
        differences = [a - m for a, m in zip(app_ms, mka1_ms, strict=True)]
        print(row("added: app - sandbox, per pair", differences, None))
        print()
        postgres = cpu.get("postgres")
        if postgres is not None:
            print(f"PostgreSQL CPU during the measured pairs: {postgres:.0%} of one core")
        print(
            f"audit: {audited} responses.get events for {expected} retrievals (warm-up "
            f"included); verify_audit: {verify_report}"
        )
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"finished {datetime.now(UTC):%Y-%m-%d %H:%M UTC}")
        if problems:
            print(f"{len(problems)} problems:", file=sys.stderr)
            print("\n".join(problems[:20]), file=sys.stderr)
            return 1
        print("every app answer 200 with the stored response and conversation ids; one")
        print("audit event per retrieval")
        return 0


if __name__ == "__main__":
    sys.exit(main())
