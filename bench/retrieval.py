"""Added latency of the web retrieval, GET /api/multichannel/<response_id>, over MKA1's own
responses.get (played by the sandbox over HTTP).

    .venv/bin/python bench/retrieval.py --db sqlite
    .venv/bin/python bench/retrieval.py --db postgres --requests 2000 --warmup 200

What runs. Two servers on loopback, both started here:

- the sandbox, playing MKA1 and the WhatsApp Graph API: `manage.py runserver --noreload`
  (or gunicorn, see the note below) with SANDBOX=true, DEBUG=true, its own SQLite
  database and queue in the scratch directory, no added latency
  (SANDBOX_MKA1_LATENCY_MS=0);
- the app in the production profile: gunicorn with the product's configuration
  (`-c python:multichannel.gunicorn multichannel.wsgi`, its default workers and
  threads unless --workers/--threads), DEBUG=false, SANDBOX=false, fake secrets,
  SECURE_SSL_REDIRECT=false, ALLOWED_HOSTS=127.0.0.1, MKA1_BASE_URL and
  WHATSAPP_GRAPH_URL pointing at the sandbox, API_THROTTLE_READ=100000/min (the default
  120/min would answer 429 long before the end). `--db sqlite` gives it a SQLite
  database and queue in the scratch directory; `--db postgres` a new scratch PostgreSQL
  database (dropped at the end) and Redis db 13 (flushed before and after; override
  with BENCH_POSTGRES_URL, BENCH_REDIS_URL), as in production.

The stored response is made by the product's real path: a signed WhatsApp webhook is
posted to the app, one `manage.py run_huey` consumer (production environment) answers
it - conversations.create and responses.create on the sandbox over HTTP, the reply sent
to the sandbox's Graph stand-in - and is stopped once the message is delivered. The
end user it created is signed in by a session row made with Django's SessionStore
(`end_user_id` in the session, as the sign-in link does), and its cookie is sent.

The measurement. After --warmup pairs, --requests pairs of sequential GETs, each pair
one request to the app (`GET /api/multichannel/<id>` with the session cookie) and one
to the sandbox's `GET /sandbox/mka1/api/v1/llm/responses/<id>` with the same bearer key
and `X-On-Behalf-Of: <end user id>` the app sends; which of the two goes first
alternates from pair to pair. Each side has its own requests.Session (keep-alive). The
app's request includes its own call to the sandbox, so "added" = app - sandbox is what
the app costs on top of MKA1: session and end-user lookup, throttle, turn ownership
check, the upstream call's client overhead, the audit event (a hash-chained insert
under a lock), and DRF rendering. It is shown as the difference of the two
distributions' percentiles and as percentiles of the per-pair differences. "CPU ms/req"
is the user+system CPU of the gunicorn master and workers (from /proc) over the
measured requests, per app request; for the sandbox, runserver's CPU per request it
served (the app's upstream calls included).

Checks (the script exits non-zero if one fails): every app answer is 200 with the same
response_id and conversation_id as the stored turn, every sandbox answer is 200 with
that id; one `responses.get` audit event was written per app request (counted after
the run); `manage.py verify_audit` accepts the ledger. "SQL statements per retrieval"
is counted in this process through Django's test client with the same settings and
database (one extra, counted, retrieval).

A note on the sandbox server. Django's runserver answers a request on a kept-alive
connection about 40 ms late: it writes the headers and the body in separate small
sends without TCP_NODELAY, so the body waits for the client's delayed ACK (Nagle).
Both measured paths pay it (the app's pooled session keeps its connection to the
sandbox alive too), so it cancels out of "added" on average but inflates both rows and
their spread. `--sandbox-server gunicorn` serves the same sandbox with the product's
gunicorn configuration instead (gunicorn sets TCP_NODELAY), which gives the cleaner
baseline; runserver is the default because it is how the production-profile test runs
the sandbox.

Everything lives in a temporary directory, removed at the end (--keep keeps it, with
the servers' logs).
"""

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchkit  # noqa: E402

THROTTLE = "100000/min"
QUESTION = "What does the benchmark measure?"


@dataclass
class Stored:
    end_user_id: str
    response_id: str
    conversation_id: str


def sandbox_env(scratch: Path, port: int) -> dict[str, str]:
    inherited = ("MKA1_", "WHATSAPP_", "HUEY_", "SANDBOX_", "GUNICORN_", "WEB_CONCURRENCY")
    base = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    return {
        **base,
        "DJANGO_SETTINGS_MODULE": "multichannel.settings",
        "DEBUG": "true",
        "SANDBOX": "true",
        "SANDBOX_MKA1_LATENCY_MS": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{scratch / 'sandbox.sqlite3'}",
        "REDIS_URL": "",
        "HUEY_SQLITE_PATH": str(scratch / "sandbox-queue.sqlite3"),
        "HUEY_IMMEDIATE": "false",
        "LOG_FORMAT": "plain",
        "SITE_URL": f"http://127.0.0.1:{port}",
    }


def answer_one_webhook(app: str, env: dict[str, str], scratch: Path) -> Stored:
    """Store a response the real way: webhook in, one consumer answers it."""
    from multichannel.models import UserMessage
    from multichannel.sandbox import whatsapp as wa

    wamid = wa.wamid()
    body = wa.encode(
        wa.webhook_payload([wa.message_event(wa_id="15559990001", text=QUESTION, message_id=wamid)])
    )
    answer = requests.post(
        f"{app}/whatsapp/webhook",
        data=body,
        headers=wa.webhook_headers(body, benchkit.APP_SECRET),
        timeout=30,
    )
    if answer.status_code != 200:
        raise SystemExit(f"the webhook answered {answer.status_code}: {answer.text[:200]}")
    log_path = scratch / "consumer.log"
    with log_path.open("wb") as log:
        consumer = subprocess.Popen(
            [benchkit.PYTHON, "manage.py", "run_huey", "--workers", "1", "--worker-type", "thread"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                message = UserMessage.objects.filter(external_id=wamid).first()
                if message is not None and message.state == UserMessage.State.DELIVERED:
                    break
                if message is not None and message.state == UserMessage.State.FAILED:
                    raise SystemExit(f"the message failed: {message.error}")
                if consumer.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-3000:]
                    raise SystemExit(f"the consumer did not answer the webhook:\n{tail}")
                time.sleep(0.1)
        finally:
            benchkit.stop(consumer, signal.SIGINT)
    if consumer.returncode != 0:
        raise SystemExit(f"the consumer exited with {consumer.returncode}")
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


def queries_per_retrieval(stored: Stored, cookie: tuple[str, str]) -> int:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(SERVER_NAME="127.0.0.1")
    client.cookies[cookie[0]] = cookie[1]
    with CaptureQueriesContext(connection) as captured:
        answer = client.get(f"/api/multichannel/{stored.response_id}")
    if answer.status_code != 200:
        raise SystemExit(f"in-process retrieval answered {answer.status_code}")
    return len(captured.captured_queries)


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
        {"Authorization": f"Bearer {benchkit.MKA1_KEY}", "X-On-Behalf-Of": stored.end_user_id}
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

    scratch = Path(tempfile.mkdtemp(prefix="retrieval-bench-"))
    database_url = ""
    servers: list[subprocess.Popen[bytes]] = []
    stack = contextlib.ExitStack()
    try:
        print(benchkit.machine_facts(), flush=True)
        redis_url = ""
        if args.db == "postgres":
            database_url = benchkit.postgres_create("mc_bench_retrieval")
            redis_url = benchkit.REDIS
            benchkit.redis_flush(redis_url)
        else:
            database_url = f"sqlite:///{scratch / 'db.sqlite3'}"
        sandbox_port, app_port = benchkit.free_port(), benchkit.free_port()
        sandbox = f"http://127.0.0.1:{sandbox_port}"
        app = f"http://127.0.0.1:{app_port}"
        sandbox_environment = sandbox_env(scratch, sandbox_port)
        env = benchkit.production_env(
            database_url=database_url,
            redis_url=redis_url,
            queue_path=scratch / "queue.sqlite3",
            bind=f"127.0.0.1:{app_port}",
            mka1_base_url=f"{sandbox}/sandbox/mka1",
            graph_url=f"{sandbox}/sandbox/graph",
            workers=args.workers,
            threads=args.threads,
            extra={"API_THROTTLE_READ": THROTTLE, "SITE_URL": app},
        )
        workers, threads = benchkit.gunicorn_defaults(env)
        benchkit.manage(["migrate", "--no-input", "-v", "0"], sandbox_environment)
        benchkit.manage(["migrate", "--no-input", "-v", "0"], env)
        os.environ.update(env)
        import django

        django.setup()

        sandbox_log = stack.enter_context((scratch / "sandbox.log").open("wb"))
        app_log = stack.enter_context((scratch / "gunicorn.log").open("wb"))
        if args.sandbox_server == "gunicorn":
            sandbox_environment["GUNICORN_BIND"] = f"127.0.0.1:{sandbox_port}"
            servers.append(
                benchkit.gunicorn_start(sandbox_environment, sandbox_log, scratch / "sandbox.ctl")
            )
        else:
            servers.append(benchkit.runserver_start(sandbox_environment, sandbox_port, sandbox_log))
        servers.append(benchkit.gunicorn_start(env, app_log, scratch / "gunicorn.ctl"))
        benchkit.wait_healthy(f"{sandbox}/healthz", servers[0], scratch / "sandbox.log")
        benchkit.wait_healthy(f"{app}/healthz", servers[1], scratch / "gunicorn.log")

        stored = answer_one_webhook(app, env, scratch)
        cookie = session_cookie(stored.end_user_id)
        queries = queries_per_retrieval(stored, cookie)
        audited_before = audit_retrievals(stored.end_user_id)
        from django.db import connections

        connections.close_all()

        stats = benchkit.proc_stats()
        roots: dict[str, int | None] = {
            "gunicorn": servers[1].pid,
            "sandbox": servers[0].pid,
            "postgres": benchkit.find_root(stats, "postgres") if args.db == "postgres" else None,
        }
        app_ms, mka1_ms, cpu, problems = measure(args, app, sandbox, stored, cookie, roots)
        audited = audit_retrievals(stored.end_user_id) - audited_before
        expected = args.warmup + args.requests
        if audited != expected:
            problems.append(f"{audited} responses.get audit events for {expected} retrievals")
        verified, verify_report = benchkit.verify_audit(env)
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
            f"answered by run_huey; SQL statements per retrieval (in process): {queries}"
        )
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
    finally:
        for server in reversed(servers):
            benchkit.stop(server)
        stack.close()
        benchkit.scratch_remove(
            db=args.db, database_url=database_url, scratch=scratch, keep=args.keep
        )


if __name__ == "__main__":
    sys.exit(main())
