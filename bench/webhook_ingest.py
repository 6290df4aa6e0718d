"""Webhook ingest of the production server: signed WhatsApp webhooks (one text for every
three statuses) sent by wrk at rising rates, then unthrottled (that mix, then texts
only), against a bare Django view served by the same gunicorn. Per stage: requests/s
achieved, latency percentiles, CPU of
gunicorn, wrk, PostgreSQL and Redis; every stage must lose and duplicate nothing.

    .venv/bin/python bench/webhook_ingest.py --db sqlite
    .venv/bin/python bench/webhook_ingest.py --db postgres \\
        --rates 50 100 200 400 800 --seconds 30 --unthrottled 30000

Results and method: docs/benchmarks.md.
"""

import argparse
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchkit  # bench/ is first on sys.path; benchkit puts the project root next

from tests.support.stack import APP_SECRET, ROOT
from tests.support.webhooks import WEBHOOK, webhook_post

LUA = ROOT / "bench" / "webhook_ingest.lua"
BARE = "/bench/bare"
MINIMAL = "/bench/minimal"
STATUSES = ("sent", "delivered", "read")
RANK = {"accepted": 0, "sent": 1, "delivered": 2, "read": 3, "failed": 4}
STATUS_SPACING = 50  # a row's next status comes this many status webhooks later
SLOW_MS = 200  # the goal: answered under 200 ms
KEEPALIVE = 5  # seconds; multichannel/gunicorn.py


@dataclass
class Stage:
    number: int
    rate: int  # requests/s; 0 = unthrottled
    count: int
    bare: bool = False
    minimal: bool = False  # the HMAC and one INSERT, bench/bare_urls.py
    texts_only: bool = False  # else 1 text : 3 statuses
    run: int = 0  # which run of a baseline
    # request id -> wamid of the text it carries
    texts: dict[str, str] = field(default_factory=dict)
    # request id -> (outbound wamid, status)
    statuses: dict[str, tuple[str, str]] = field(default_factory=dict)
    outbound: list[str] = field(default_factory=list)

    @property
    def baseline(self) -> bool:
        return self.bare or self.minimal

    @property
    def label(self) -> str:
        if self.bare:
            return f"bare view, max #{self.run + 1}"
        if self.minimal:
            return f"minimal webhook view, max #{self.run + 1}"
        if self.texts_only:
            return "max, texts only"
        return str(self.rate) if self.rate else "max"

    @property
    def slug(self) -> str:
        """For file names: bare1, minimal1, 320, max, max-texts."""
        if self.bare or self.minimal:
            return f"{'bare' if self.bare else 'minimal'}{self.run + 1}"
        return self.label.replace(", texts only", "-texts")

    def text_wamid(self, i: int) -> str:
        return f"wamid.BENCH{self.number:02d}T{i:07d}"

    def outbound_wamid(self, i: int) -> str:
        return f"wamid.BENCH{self.number:02d}O{i:07d}"


@dataclass
class Result:
    stage: Stage
    wall: float
    achieved: float
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    slow: int
    non_200: int
    unanswered: int
    errors: dict[str, int]
    codes: dict[str, int]
    cpu: dict[str, float | None]
    wrk_cpu: float
    restarts: int
    log_problems: int
    acked_texts: int = 0
    stored_texts: int = 0
    lost: int = 0
    duplicated: int = 0
    statuses_ok: int = 0
    statuses_total: int = 0
    enqueued: int = 0
    fan_out_ms: float = 0.0
    problems: list[str] = field(default_factory=list)


# --- request bodies -------------------------------------------------------------------


def phone(user: int) -> str:
    return f"1555{user:07d}"


def text_body(wa: Any, wamid: str, sender: str, i: int, timestamp: int) -> bytes:
    event = wa.message_event(
        wa_id=sender,
        text=f"Hello, this is benchmark question number {i}. What are your opening hours?",
        message_id=wamid,
        timestamp=timestamp,
        name=f"Bench User {sender[-4:]}",
    )
    return bytes(wa.encode(wa.webhook_payload([event])))


def status_body(wa: Any, wamid: str, status: str, recipient: str, timestamp: int) -> bytes:
    event = wa.status_event(wamid, status, recipient_id=recipient, timestamp=timestamp)
    if status != "read":  # Meta adds the conversation and pricing to sent/delivered
        event["conversation"] = {"id": "bench" + wamid[-12:], "origin": {"type": "service"}}
        event["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "service"}
    return bytes(wa.encode(wa.webhook_payload(statuses=[event])))


def stage_write(stage: Stage, users: int, threads: int, prefix: Path) -> None:
    """One file per wrk thread: request id, path, signature, body (tab-separated)."""
    from multichannel.sandbox import whatsapp as wa

    now = int(time.time())
    lines: list[str] = []

    def add(request_id: str, path: str, body: bytes) -> None:
        signature = wa.sign(body, APP_SECRET)
        lines.append(f"{request_id}\t{path}\t{signature}\t{body.decode()}")

    if stage.baseline:
        for i in range(stage.count):
            body = text_body(wa, stage.text_wamid(i), phone(i % users), i, now)
            add(f"{stage.slug}.{stage.number}.{i}", BARE if stage.bare else MINIMAL, body)
    elif stage.texts_only:
        for i in range(stage.count):
            request_id = f"text.{stage.number}.{i}"
            stage.texts[request_id] = stage.text_wamid(i)
            add(request_id, WEBHOOK, text_body(wa, stage.text_wamid(i), phone(i % users), i, now))
    else:
        n = stage.count // 4
        stage.outbound = [stage.outbound_wamid(i) for i in range(n)]
        # Statuses in waves: row j's "sent", then row j-d's "delivered", then row
        # j-2d's "read"; one text after every three statuses.
        order: list[tuple[int, str]] = []
        for j in range(n + 2 * STATUS_SPACING):
            for step, status in enumerate(STATUSES):
                row = j - step * STATUS_SPACING
                if 0 <= row < n:
                    order.append((row, status))
        texts = 0
        for k, (row, status) in enumerate(order):
            request_id = f"{status}.{stage.number}.{len(lines)}"
            stage.statuses[request_id] = (stage.outbound[row], status)
            add(request_id, WEBHOOK, status_body(wa, stage.outbound[row], status, phone(row), now))
            if k % 3 == 2:
                wamid = stage.text_wamid(texts)
                request_id = f"text.{stage.number}.{len(lines)}"
                stage.texts[request_id] = wamid
                add(request_id, WEBHOOK, text_body(wa, wamid, phone(texts % users), texts, now))
                texts += 1
    for t in range(threads):
        path = Path(f"{prefix}-{t + 1}.tsv")
        path.write_text("".join(line + "\n" for line in lines[t::threads]))


# --- the database -------------------------------------------------------------------


def seed(users: int, stages: list[Stage]) -> None:
    """Known senders, and the replies (OutboundMessage rows) the statuses are about."""
    from django.utils import timezone

    from multichannel.models import Channel, EndUser, UserMessage
    from whatsapp.models import OutboundMessage, WhatsAppIdentity

    people = EndUser.objects.bulk_create([EndUser() for _ in range(users)], batch_size=2000)
    WhatsAppIdentity.objects.bulk_create(
        [WhatsAppIdentity(end_user=p, wa_id=phone(i)) for i, p in enumerate(people)],
        batch_size=2000,
    )
    now = timezone.now()
    for stage in stages:
        if stage.baseline or not stage.outbound:
            continue
        messages = UserMessage.objects.bulk_create(
            [
                UserMessage(
                    end_user=people[i % users],
                    channel=Channel.WHATSAPP,
                    external_id=f"wamid.BENCHSEED{stage.number:02d}N{i:07d}",
                    text="an earlier question",
                    sent_at=now,
                    state=UserMessage.State.DELIVERED,
                    reply_text="an earlier answer",
                )
                for i in range(len(stage.outbound))
            ],
            batch_size=2000,
        )
        OutboundMessage.objects.bulk_create(
            [
                OutboundMessage(
                    user_message=message,
                    wamid=wamid,
                    recipient=phone(i),
                    text="an earlier answer",
                )
                for i, (message, wamid) in enumerate(zip(messages, stage.outbound, strict=True))
            ],
            batch_size=2000,
        )


def queries_per_webhook() -> tuple[tuple[int, int], tuple[int, int]]:
    """SQL statements one text webhook and one status webhook cost, (in the request,
    in the worker's fan-out), through Django's test client in this process (same
    settings, same database)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from multichannel.models import Channel, EndUser, UserMessage
    from multichannel.sandbox import whatsapp as wa
    from whatsapp.models import OutboundMessage, WebhookDelivery
    from whatsapp.services import delivery_fan_out

    sender = EndUser.objects.filter(whatsapp_identity__wa_id=phone(0)).get()
    message = UserMessage.objects.create(
        end_user=sender, channel=Channel.WHATSAPP, text="q", sent_at=timezone.now()
    )
    OutboundMessage.objects.create(
        user_message=message, wamid="wamid.BENCHPREO", recipient=phone(0), text="a"
    )
    client = Client(SERVER_NAME="127.0.0.1")
    counts = []
    for body in (
        text_body(wa, "wamid.BENCHPRET", phone(0), 0, int(time.time())),
        status_body(wa, "wamid.BENCHPREO", "delivered", phone(0), int(time.time())),
    ):
        with CaptureQueriesContext(connection) as captured:
            answer = webhook_post(body, client=client)
        if answer.status_code != 200:
            raise SystemExit(f"in-process webhook answered {answer.status_code}")
        delivery = WebhookDelivery.objects.latest("pk")
        with CaptureQueriesContext(connection) as fanned:
            if not delivery_fan_out(delivery.pk):
                raise SystemExit("in-process webhook: its delivery was fanned out already")
        counts.append((len(captured.captured_queries), len(fanned.captured_queries)))
    return counts[0], counts[1]


def minimal_rows() -> int:
    """Deliveries the minimal view has kept (bench/bare_urls.py marks them "bench")."""
    from whatsapp.models import WebhookDelivery

    return WebhookDelivery.objects.filter(object="bench").count()


def pending_tasks() -> int:
    from huey.contrib.djhuey import HUEY

    return int(HUEY.pending_count())


def fan_out_pending() -> float:
    """Fan out, in this process, every delivery the stage kept (no consumer runs during
    the stage: the request only keeps the delivery and queues its fan-out). Returns
    the milliseconds per delivery, for the record; the checks then read what it stored."""
    from whatsapp.selectors import deliveries_waiting
    from whatsapp.services import delivery_fan_out

    waiting = deliveries_waiting()
    # Statuses the stage sent out of order are refused as "not newer", one INFO line each.
    services_log = logging.getLogger("whatsapp.services")
    level = services_log.level
    services_log.setLevel(logging.WARNING)
    started = time.perf_counter()
    try:
        if waiting.newest_id is not None:
            delivery_fan_out(waiting.newest_id)  # and every older one, oldest first
    finally:
        services_log.setLevel(level)
    return (time.perf_counter() - started) * 1000 / waiting.count if waiting.count else 0.0


def verify(stage: Stage, result: Result, acked: set[str]) -> None:
    from django.db.models import Count

    from multichannel.models import UserMessage
    from whatsapp.models import InboundMessage, OutboundMessage

    prefix = stage.text_wamid(0)[:-7]
    acked_wamids = {stage.texts[i] for i in acked if i in stage.texts}
    stored = set(
        InboundMessage.objects.filter(wamid__startswith=prefix).values_list("wamid", flat=True)
    )
    result.acked_texts = len(acked_wamids)
    result.stored_texts = len(stored)
    result.lost = len(acked_wamids - stored)
    user_messages = UserMessage.objects.filter(external_id__startswith=prefix)
    repeated = (
        user_messages.values("external_id").annotate(n=Count("id")).filter(n__gt=1).order_by()
    )
    result.duplicated = sum(row["n"] - 1 for row in repeated)
    with_inbound = user_messages.filter(whatsapp_inbound__isnull=False).count()
    if result.lost:
        result.problems.append(f"{result.lost} texts answered 200 but not stored")
    if result.duplicated:
        result.problems.append(f"{result.duplicated} duplicate messages stored")
    if with_inbound != len(stored) or user_messages.count() != len(stored):
        result.problems.append(
            f"{len(stored)} inbound messages but {user_messages.count()} user messages "
            f"({with_inbound} linked)"
        )
    expected: dict[str, int] = {}
    for request_id in acked:
        if request_id in stage.statuses:
            wamid, status = stage.statuses[request_id]
            expected[wamid] = max(expected.get(wamid, 0), RANK[status])
    actual = dict(
        OutboundMessage.objects.filter(wamid__in=stage.outbound).values_list("wamid", "status")
    )
    result.statuses_total = len(stage.outbound)
    result.statuses_ok = sum(
        1
        for wamid in stage.outbound
        if RANK[actual.get(wamid, "accepted")] >= expected.get(wamid, 0)
    )
    if result.statuses_ok != result.statuses_total:
        missing = result.statuses_total - result.statuses_ok
        result.problems.append(f"{missing} status updates answered 200 but not applied")


# --- running a stage -----------------------------------------------------------------


def log_offset_count(log_path: Path, offset: int) -> tuple[int, int, int]:
    """(new offset, workers booted, warning/error lines) in the log since `offset`."""
    with log_path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    boots = text.count("Booting worker")
    problems = sum(
        1
        for line in text.splitlines()
        if any(m in line for m in ("Traceback", '"ERROR"', '"WARNING"', "[ERROR]", "[CRITICAL]"))
    )
    return offset + len(text.encode()), boots, problems


def wrk_wait(
    process: subprocess.Popen[bytes], out: Path, threads: int
) -> tuple[int, "resource.struct_rusage"]:
    """Wait for wrk, interrupting its fixed-length sleep once every thread has said it
    is done; its exit status and resource usage (CPU time)."""
    interrupted = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage
        markers = [Path(f"{out}.done-{n + 1}") for n in range(threads)]
        if not interrupted and all(marker.exists() for marker in markers):
            process.send_signal(signal.SIGINT)
            interrupted = True
        time.sleep(0.02)


def run_stage(
    stage: Stage,
    args: argparse.Namespace,
    url: str,
    scratch: Path,
    roots: dict[str, int | None],
    log_path: Path,
    log_offset: int,
) -> tuple[Result, int]:
    prefix = scratch / f"stage{stage.number}"
    out = scratch / f"stage{stage.number}.json"
    per_thread = args.connections // args.wrk_threads
    planned = stage.count / stage.rate if stage.rate else stage.count / 200
    cap = int(planned * 4 + 60)  # wrk's -d: a backstop only; threads stop when done
    command = [
        "wrk",
        f"-t{args.wrk_threads}",
        f"-c{per_thread * args.wrk_threads}",
        f"-d{cap}s",
        "--timeout",
        f"{args.timeout}s",
        "-s",
        str(LUA),
        url,
        "--",
        str(prefix),
        str(stage.rate),
        str(args.wrk_threads),
        str(per_thread),
        str(SLOW_MS),
        str(out),
    ]
    pending_before = 0 if stage.baseline else pending_tasks()
    minimal_before = minimal_rows() if stage.minimal else 0
    from django.db import connections

    connections.close_all()  # no open SQLite transaction or idle connection during the stage
    profilers = []
    if args.py_spy and not stage.rate:
        stats = benchkit.proc_stats()
        master = roots["gunicorn"]
        assert master is not None
        workers = [pid for pid in benchkit.family(master, stats) if pid != master]
        targets = {f"{stage.slug}-{pid}": pid for pid in workers}
        profilers = benchkit.py_spy_start(args.py_spy, targets)
        time.sleep(1)  # attached before the first request
    before = benchkit.cpu_sample(roots)
    with (scratch / f"wrk-{stage.number}.log").open("wb") as wrk_log:
        process = subprocess.Popen(command, stdout=wrk_log, stderr=subprocess.STDOUT)
        status, usage = wrk_wait(process, out, args.wrk_threads)
    after = benchkit.cpu_sample(roots)
    benchkit.py_spy_stop(profilers)
    if status != 0 or not out.exists():
        tail = (scratch / f"wrk-{stage.number}.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"wrk failed in stage {stage.label} ({status}):\n{tail}")
    data = json.loads(out.read_text())
    wall = after.at - before.at
    threads = data["threads"]
    # A thread that sent nothing has no first/last time (Lua drops nil fields).
    firsts = [t["first_sent_ms"] for t in threads if t.get("first_sent_ms")]
    lasts = [t["last_answer_ms"] for t in threads if t.get("last_answer_ms")]
    duration = (max(lasts) - min(firsts)) / 1000 if firsts and lasts else 0.0
    log_offset, restarts, log_problems = log_offset_count(log_path, log_offset)
    sent = sum(t["sent"] for t in threads)
    answered = sum(t["answered"] for t in threads)
    latencies = [ms for t in threads for ms in t["latencies_ms"]]
    codes: dict[str, int] = {}
    for t in threads:
        for code, n in dict(t["codes"] or {}).items():
            codes[code] = codes.get(code, 0) + n
    non_200_answers = sum(sum(dict(t["other"] or {}).values()) + t["unmatched"] for t in threads)
    errors = {k: int(v) for k, v in data["errors"].items()}
    acked = {request_id for t in threads for request_id in t["acked"]}
    result = Result(
        stage=stage,
        wall=wall,
        achieved=answered / duration if duration else 0.0,
        requests=answered,
        p50_ms=benchkit.percentile(latencies, 50) if latencies else float("nan"),
        p99_ms=benchkit.percentile(latencies, 99) if latencies else float("nan"),
        max_ms=max(latencies, default=float("nan")),
        slow=sum(t["slow"] for t in threads),
        non_200=non_200_answers + (stage.count - answered),
        unanswered=stage.count - answered,
        errors=errors,
        codes=codes,
        cpu=benchkit.cpu_shares(before, after),
        wrk_cpu=(usage.ru_utime + usage.ru_stime) / wall,
        restarts=restarts,
        log_problems=log_problems,
    )
    if sent != stage.count:
        result.problems.append(f"wrk sent {sent} of {stage.count} requests")
    if stage.baseline:
        if len(acked) != stage.count:
            result.problems.append(f"{stage.label}: {stage.count - len(acked)} requests not 200")
        if stage.minimal:
            result.acked_texts = len(acked)
            result.stored_texts = minimal_rows() - minimal_before
            if result.stored_texts < result.acked_texts:
                result.lost = result.acked_texts - result.stored_texts
                result.problems.append(f"{stage.label}: {result.lost} acknowledged, not stored")
    else:
        result.enqueued = pending_tasks() - pending_before
        result.fan_out_ms = fan_out_pending()
        verify(stage, result, acked)
    return result, log_offset


# --- output ------------------------------------------------------------------------


def fmt_share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def print_tables(results: list[Result], bare: Result, minimal: Result) -> None:
    print(
        "| target req/s | achieved req/s | p50 ms | p99 ms | > 200 ms | non-200 "
        "| stored / acked texts | lost | duplicated | statuses applied | % of bare "
        "| % of minimal | gunicorn CPU | ms CPU/req | restarts |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in [bare, minimal, *results]:
        gunicorn = r.cpu.get("gunicorn")
        per_request = "-" if gunicorn is None else f"{gunicorn * r.wall * 1000 / r.requests:.2f}"
        if r.stage.bare:
            checks = "- | - | - | - | - | -"
        elif r.stage.minimal:
            checks = (
                f"{r.stored_texts} / {r.acked_texts} | {r.lost} | - | - | "
                f"{r.achieved / bare.achieved:.0%} | -"
            )
        else:
            checks = (
                f"{r.stored_texts} / {r.acked_texts} | {r.lost} | {r.duplicated} | "
                f"{r.statuses_ok} / {r.statuses_total} | {r.achieved / bare.achieved:.0%} | "
                f"{r.achieved / minimal.achieved:.0%}"
            )
        print(
            f"| {r.stage.label} | {r.achieved:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
            f"{r.slow} | {r.non_200} | {checks} | {fmt_share(gunicorn)} | {per_request} | "
            f"{r.restarts} |"
        )
    print()
    print(
        "| target req/s | wall s | wrk CPU | postgres CPU | redis CPU | machine busy "
        "| wrk timeouts | socket errors | log warnings | fan-outs queued / webhooks "
        "| fan-out ms / delivery (afterwards, in process) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in [bare, minimal, *results]:
        sockets = r.errors["connect"] + r.errors["read"] + r.errors["write"]
        enqueued = "-" if r.stage.baseline else f"{r.enqueued} / {r.requests}"
        fan_out = "-" if r.stage.baseline else f"{r.fan_out_ms:.2f}"
        print(
            f"| {r.stage.label} | {r.wall:.1f} | {r.wrk_cpu:.0%} | "
            f"{fmt_share(r.cpu.get('postgres'))} | {fmt_share(r.cpu.get('redis'))} | "
            f"{fmt_share(r.cpu.get('machine busy'))} of {os.cpu_count()} cores | "
            f"{r.errors['timeout']} | {sockets} | {r.log_problems} | {enqueued} | {fan_out} |"
        )


def summary_lines(results: list[Result], bare: Result, workers: int, threads: int) -> list[str]:
    lines = []
    top = next(r for r in results if not r.stage.rate and not r.stage.texts_only)
    under = [r for r in results if r.p99_ms < SLOW_MS and not r.non_200]
    best = max(under, key=lambda r: r.achieved) if under else None
    lines.append(
        f"goal (issue): ~2,000 webhook requests/s answered under 200 ms. Unthrottled: "
        f"{top.achieved:.0f} req/s ({top.achieved / 2000:.0%} of the goal) at p99 "
        f"{top.p99_ms:.0f} ms; "
        + (
            f"fastest stage with p99 under 200 ms and no errors: {best.stage.label} "
            f"(achieved {best.achieved:.0f} req/s)."
            if best
            else "no stage had p99 under 200 ms without errors."
        )
    )
    cores = os.cpu_count() or 1
    gunicorn = top.cpu.get("gunicorn")
    if gunicorn is not None:
        per_request = gunicorn * top.wall / top.requests
        lines.append(
            f"unthrottled stage: gunicorn used {gunicorn:.2f} cores, wrk {top.wrk_cpu:.2f}, "
            f"postgres {fmt_share(top.cpu.get('postgres'))}, redis "
            f"{fmt_share(top.cpu.get('redis'))} of one core; the machine was "
            f"{fmt_share(top.cpu.get('machine busy'))} busy. At {per_request * 1000:.2f} ms of "
            f"gunicorn CPU per webhook, {cores} cores given to gunicorn alone would serve at "
            f"most ~{cores / per_request:.0f} webhooks/s ({workers} workers x {threads} threads)."
        )
    return lines


# --- main ----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--rates", type=int, nargs="+", default=[50, 100, 200, 400, 800], help="req/s per stage"
    )
    parser.add_argument("--seconds", type=float, default=3, help="length of each throttled stage")
    parser.add_argument(
        "--unthrottled", type=int, default=2000, help="requests in the unthrottled stages"
    )
    parser.add_argument(
        "--bare-runs",
        type=int,
        default=3,
        help="unthrottled runs of the bare view and of the minimal webhook view (each a median)",
    )
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: the config's)")
    parser.add_argument("--threads", type=int, help="threads per worker (default: the config's)")
    parser.add_argument(
        "--max-requests",
        type=int,
        help="gunicorn's max_requests (default: the config's; 0 = never recycle workers)",
    )
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32, help="wrk connections in total")
    parser.add_argument("--timeout", type=float, default=10, help="wrk's request timeout, s")
    parser.add_argument("--users", type=int, default=1000, help="distinct senders")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="profile the gunicorn workers in each unthrottled stage with py-spy (pip install "
        "py-spy): raw folded stacks, DIR/<stage>-<pid>.txt; bench/spy_breakdown.py sums them",
    )
    args = parser.parse_args()
    if min(args.rates) < 1 or args.seconds <= 0 or args.unthrottled < 4 or args.users < 1:
        parser.error("rates, seconds, users must be positive, --unthrottled at least 4")
    if args.bare_runs < 1:
        parser.error("--bare-runs must be at least 1")
    if args.connections < args.wrk_threads:
        parser.error("--connections must be at least --wrk-threads")
    if args.connections / min(args.rates) >= KEEPALIVE:
        # Each connection would sit idle longer than gunicorn keeps it open.
        parser.error(f"fewer --connections for rates that low (connections/rate < {KEEPALIVE} s)")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    with benchkit.scratch("webhook-bench-", keep=args.keep) as scratch, ExitStack() as cleanup:
        print(benchkit.machine_facts(), flush=True)
        # Only the web server runs: no consumer, and nothing calls MKA1 or the Graph API.
        stack = benchkit.stack_on(
            args.db,
            scratch,
            cleanup,
            prefix="mc_bench_ingest",
            app_env={
                "DJANGO_SETTINGS_MODULE": "bench.bare_settings",
                "LOG_LEVEL": "INFO",
                **benchkit.gunicorn_size(args.workers, args.threads),
            },
        )
        if args.max_requests is not None:
            stack.commands["web"][-1:-1] = ["--max-requests", str(args.max_requests)]
        workers, threads = benchkit.gunicorn_defaults(stack.app_env)
        os.environ.update(stack.app_env)
        import django

        django.setup()
        stack.manage("migrate", "--no-input", "-v", "0")

        # The bare view's rate swings between runs (how gunicorn's workers happen to
        # share wrk's keep-alive connections): measured several times, the median is the
        # ceiling each stage is compared with.
        # The two baselines take turns, so that both see the same hour.
        stages: list[Stage] = []
        for run in range(args.bare_runs):
            stages.append(Stage(len(stages), 0, args.unthrottled, bare=True, run=run))
            stages.append(Stage(len(stages), 0, args.unthrottled, minimal=True, run=run))
        for rate in args.rates:
            stages.append(Stage(len(stages), rate, max(4, round(rate * args.seconds / 4) * 4)))
        stages.append(Stage(len(stages), 0, args.unthrottled // 4 * 4))
        stages.append(Stage(len(stages), 0, args.unthrottled // 4 * 4, texts_only=True))
        started = time.monotonic()
        for stage in stages:
            stage_write(stage, args.users, args.wrk_threads, scratch / f"stage{stage.number}")
        seed(args.users, stages)
        text_queries, status_queries = queries_per_webhook()
        prepared = time.monotonic() - started

        queue = "Redis db 13 queue" if args.db == "postgres" else "SQLite queue"
        store = "PostgreSQL (scratch database)" if args.db == "postgres" else "SQLite"
        recycle = (
            "config's max_requests"
            if args.max_requests is None
            else (f"max_requests {args.max_requests}")
        )
        print(
            f"server: gunicorn -c python:multichannel.gunicorn, gthread, {workers} workers x "
            f"{threads} threads ({recycle}), DEBUG=false, {store} + {queue}, no consumer; "
            f"wrk {args.wrk_threads} threads x {args.connections // args.wrk_threads} "
            f"connections on loopback; {args.users} senders; mix 1 text : 3 statuses"
        )
        print(
            f"SQL statements per webhook (in process, Django test client), in the request "
            f"+ in the worker's fan-out: text {text_queries[0]} + {text_queries[1]}, status "
            f"{status_queries[0]} + {status_queries[1]}; {sum(s.count for s in stages)} "
            f"requests generated and rows seeded in {prepared:.1f} s"
        )
        print(flush=True)

        stack.start("web")
        log_path = stack.log_path("web")
        stats = benchkit.proc_stats()
        roots = {
            "gunicorn": stack.processes["web"].pid,
            "postgres": benchkit.find_root(stats, "postgres"),
            "redis": benchkit.find_root(stats, "redis-server"),
        }
        offset = log_path.stat().st_size
        results: list[Result] = []
        for stage in stages:
            result, offset = run_stage(stage, args, stack.app_url, scratch, roots, log_path, offset)
            results.append(result)
            print(
                f"  stage {stage.label}: {result.achieved:.0f} req/s, p99 "
                f"{result.p99_ms:.1f} ms, {len(result.problems)} problems",
                file=sys.stderr,
                flush=True,
            )
        stack.stop()
        bares = [r for r in results if r.stage.bare]
        minimals = [r for r in results if r.stage.minimal]
        measured = [r for r in results if not r.stage.baseline]
        bare = sorted(bares, key=lambda r: r.achieved)[len(bares) // 2]
        minimal = sorted(minimals, key=lambda r: r.achieved)[len(minimals) // 2]
        print(
            "bare view runs: "
            + ", ".join(f"{r.achieved:.0f}" for r in bares)
            + f" req/s; the median ({bare.achieved:.0f}) is the ceiling. Minimal webhook view "
            + "(HMAC, one INSERT) runs: "
            + ", ".join(f"{r.achieved:.0f}" for r in minimals)
            + f" req/s; median {minimal.achieved:.0f}"
        )
        print()
        print_tables(measured, bare, minimal)
        print()
        for line in summary_lines(measured, bare, workers, threads):
            print(line)
        problems = [f"stage {r.stage.label}: {p}" for r in results for p in r.problems]
        for r in results:
            if r.codes:
                print(f"stage {r.stage.label}: non-200 status codes {r.codes}")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"finished {datetime.now(UTC):%Y-%m-%d %H:%M UTC}")
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 1
        print("every stage: no text answered 200 was lost, no message stored twice, every")
        print("status answered 200 applied")
        return 0


if __name__ == "__main__":
    sys.exit(main())
