"""Fault injection against the real processes: the production profile (gunicorn + one
queue consumer, DEBUG off) with a sandbox server playing MKA1 and the Graph API over
HTTP. Each scenario says what it breaks, lets a sender play Meta (signed webhooks,
redelivered until acknowledged with 200), waits until every message is answered, and
asserts that nothing was lost, nothing was duplicated and every user's replies came in
the order sent. Run alone with `pytest -m fault`; `bench/reliability.py` runs the suite
and prints each scenario's counts (docs/reliability.md)."""

import json
import os
import random
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.ci import need
from tests.support.invariants import Outcome, exactly_once_in_order
from tests.support.stack import APP_SECRET, Stack, free_port, postgres_database, query, reachable
from tests.support.webhooks import Message, conversation, webhook_body, webhook_send

pytestmark = pytest.mark.fault

# Short leases and retries so recovery happens within seconds, not minutes.
FAST_RECOVERY = {
    "TURN_LEASE_SECONDS": "8",
    "TURN_RETRY_SECONDS": "1",
    "TURN_MAX_ATTEMPTS": "50",  # faults must delay answers here, never cancel them
    "MKA1_TIMEOUT": "2",
    "MKA1_BACKOFF_SECONDS": "0.2",
    "MKA1_BACKOFF_MAX_SECONDS": "1",
    "WHATSAPP_TIMEOUT": "2",
    "HUEY_WORKERS": "8",
    "GUNICORN_THREADS": "4",
}


@dataclass
class Sender:
    """Plays Meta: posts signed webhooks to the server at `url` and redelivers each
    until it gets a 200."""

    url: str
    threads: int = 8
    deliveries: int = 0
    failed_deliveries: int = 0
    acknowledged: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, batch: list[Message], deadline: float) -> None:
        body = webhook_body(batch)
        with requests.Session() as session:
            while time.monotonic() < deadline:
                try:
                    answer = webhook_send(self.url, body, secret=APP_SECRET, session=session)
                    ok = answer.status_code == 200
                except requests.RequestException:
                    ok = False
                with self._lock:
                    self.deliveries += 1
                    if ok:
                        self.acknowledged.update(message.wamid for message in batch)
                        return
                    self.failed_deliveries += 1
                time.sleep(0.2)  # Meta backs off before redelivering
        raise AssertionError(f"never acknowledged: {[m.wamid for m in batch]}")

    def send(self, rounds: list[list[list[Message]]], *, pace: float = 0.0) -> None:
        """Post round after round: a user's next message only once the last one was
        acknowledged, as a person types them; within a round, everything at once."""
        deadline = time.monotonic() + 150
        with ThreadPoolExecutor(self.threads) as pool:
            for batches in rounds:
                futures = []
                for batch in batches:
                    futures.append(pool.submit(self.post, batch, deadline))
                    if pace:
                        time.sleep(pace)
                for future in futures:
                    future.result()

    def send_in_background(self, rounds: list[list[list[Message]]], **kwargs: Any) -> Future[None]:
        """send() in a thread; the future's result() waits for it and re-raises."""
        runner = ThreadPoolExecutor(1)
        sending = runner.submit(self.send, rounds, **kwargs)
        runner.shutdown(wait=False)
        return sending


def in_rounds(messages: list[Message]) -> list[list[list[Message]]]:
    """One webhook per message, grouped so that round n holds everyone's n-th message."""
    rounds: dict[int, list[list[Message]]] = {}
    for message in messages:
        rounds.setdefault(message.timestamp, []).append([message])
    return [rounds[timestamp] for timestamp in sorted(rounds)]


# --- counting --------------------------------------------------------------------------


def delivered(stack: Stack) -> int:
    sql = "SELECT COUNT(*) FROM multichannel_usermessage WHERE state = 'delivered'"
    rows = query(stack.database_url, sql)
    return int(rows[0][0])


def wait_until_delivered(stack: Stack, count: int, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if delivered(stack) >= count:
            return
        time.sleep(0.25)
    raise AssertionError(
        f"only {delivered(stack)} of {count} delivered in {timeout}s\n{stack.log_tail()}"
    )


@dataclass
class Tally:
    """One scenario's outcome, as bench/reliability.py prints it."""

    scenario: str
    injected: str
    deliveries: int
    seconds: float
    outcome: Outcome

    def row(self) -> dict[str, Any]:
        fields = {key: value for key, value in asdict(self).items() if key != "outcome"}
        return {**fields, **asdict(self.outcome)}


def tally(
    stack: Stack, sender: Sender, messages: list[Message], *, scenario: str, injected: str,
    started: float, crash: bool = False,
) -> Tally:  # fmt: skip
    """Count what happened to `messages` and hold it to the invariants (`crash`: the one
    at-least-once window of a killed consumer is allowed, see exactly_once_in_order)."""
    outcome = exactly_once_in_order(stack, messages, sender.acknowledged, crash=crash)
    seconds = round(time.monotonic() - started, 1)
    return Tally(scenario, injected, sender.deliveries, seconds, outcome)


def settle(stack: Stack, result: Tally) -> None:
    """Record the counts, then hold the scenario to them (the audit chain included)."""
    path = os.environ.get("FAULT_REPORT")
    if path:
        with open(path, "a") as report:
            report.write(json.dumps(result.row()) + "\n")
    assert result.outcome.problems == [], f"{result.outcome.problems}\n{stack.log_tail()}"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    started: list[Stack] = []

    def up(**kwargs: Any) -> Stack:
        app_env = {**FAST_RECOVERY, **kwargs.pop("app_env", {})}
        running = Stack(tmp_path, app_env=app_env, **kwargs)
        started.append(running)
        return running.up()

    yield up
    for running in started:
        running.stop()


# --- the scenarios ---------------------------------------------------------------------


def test_consumer_killed_mid_batch_loses_and_repeats_nothing(stack: Callable[..., Stack]) -> None:
    app = stack(sandbox_env={"SANDBOX_MKA1_LATENCY_MS": "150"})
    started = time.monotonic()
    messages = conversation("kill-consumer", users=24, per_user=5)
    sender = Sender(app.app_url)
    sender.send(in_rounds(messages))
    wait_until_delivered(app, 30)
    app.kill("consumer")  # SIGKILL: MKA1 calls and sends in flight, leases left behind
    halfway = delivered(app)
    app.start("consumer")
    wait_until_delivered(app, len(messages))
    result = tally(
        app, sender, messages, scenario="consumer SIGKILLed mid-batch",
        injected=f"SIGKILL to the consumer after {halfway} of {len(messages)} replies",
        started=started, crash=True,
    )  # fmt: skip
    settle(app, result)


def test_web_killed_while_webhooks_arrive_processes_every_acknowledged_message(
    stack: Callable[..., Stack],
) -> None:
    app = stack()
    started = time.monotonic()
    messages = conversation("kill-web", users=20, per_user=6)
    sender = Sender(app.app_url, threads=6)
    sending = sender.send_in_background(in_rounds(messages), pace=0.02)
    while len(sender.acknowledged) < 30:
        time.sleep(0.05)
    app.kill("web")  # SIGKILL to gunicorn and its workers, requests in flight
    acknowledged_before = len(sender.acknowledged)
    time.sleep(1)
    app.start("web")
    sending.result(timeout=180)
    wait_until_delivered(app, len(messages))
    result = tally(
        app, sender, messages, scenario="web server SIGKILLed under webhooks",
        injected=f"SIGKILL to gunicorn after {acknowledged_before} acknowledgements, 1 s down",
        started=started,
    )  # fmt: skip
    assert sender.failed_deliveries > 0  # the outage was real: Meta had to redeliver
    settle(app, result)


def test_mka1_errors_and_timeouts_for_a_while_delay_answers_but_lose_none(
    stack: Callable[..., Stack],
) -> None:
    app = stack()
    started = time.monotonic()
    # Taken in order: ten 500s, ten 429s (Retry-After 1), then five calls that take
    # longer than MKA1_TIMEOUT (the sandbox still stores them: orphan responses).
    app.sandbox_fault("responses.create", "--status", "500", "--times", "10")
    app.sandbox_fault("responses.create", "--status", "429", "--times", "10", "--retry-after", "1")
    app.sandbox_fault("responses.create", "--delay-ms", "3000", "--times", "5")
    messages = conversation("mka1-faults", users=10, per_user=6)
    sender = Sender(app.app_url)
    sender.send(in_rounds(messages))
    wait_until_delivered(app, len(messages))
    result = tally(
        app, sender, messages, scenario="MKA1 500 / 429 / timeouts",
        injected="10 x 500, 10 x 429 (Retry-After 1), 5 x 3 s delay (timeout 2 s)",
        started=started,
    )  # fmt: skip
    settle(app, result)
    # Each timed-out call may have left an orphan response at MKA1, never more.
    assert len(messages) <= result.outcome.mka1_responses <= len(messages) + 5


def test_media_downloads_cut_short_and_transcriptions_failing_answer_each_once(
    stack: Callable[..., Stack],
) -> None:
    from tests.support.media import voice_note

    app = stack()
    started = time.monotonic()
    # Every other message a voice note saying its text, uploaded to the Graph stand-in.
    messages = [
        replace(message, media=voice_note(
            message.text, graph_url=f"{app.sandbox_url}/sandbox/graph", wa_id=message.wa_id,
            message_id=message.wamid, timestamp=message.timestamp,
        )) if n % 2 else message
        for n, message in enumerate(conversation("media-faults", users=6, per_user=4))
    ]  # fmt: skip
    voices = sum(1 for message in messages if message.media is not None)
    app.sandbox_fault("graph.media.download", "--truncate", "--times", "6")
    app.sandbox_fault("speech.transcriptions", "--status", "503", "--times", "6")
    sender = Sender(app.app_url)
    sender.send(in_rounds(messages))
    wait_until_delivered(app, len(messages))
    result = tally(
        app, sender, messages, scenario="media download cut short, transcription 503",
        injected=f"6 x download truncated mid-stream, 6 x 503 from speech.transcriptions "
        f"({voices} voice notes of {len(messages)} messages)",
        started=started,
    )  # fmt: skip
    settle(app, result)
    # Each voice note transcribed once, and that once audited: no retry repeated it.
    transcribed = "SELECT COUNT(*) FROM audit_auditevent WHERE action = 'speech.transcriptions'"
    assert query(app.database_url, transcribed)[0][0] == voices
    held = "SELECT COUNT(*) FROM sandbox_sandboxtranscription"
    assert query(app.sandbox_database_url, held)[0][0] == voices
    left = "SELECT COALESCE(SUM(remaining), 0) FROM sandbox_sandboxfault"
    assert query(app.sandbox_database_url, left)[0][0] == 0  # every planned fault happened


def test_graph_api_down_for_a_while_delivers_every_reply_once(
    stack: Callable[..., Stack],
) -> None:
    app = stack()
    started = time.monotonic()
    app.sandbox_fault("graph.messages", "--status", "503", "--times", "40")
    messages = conversation("graph-down", users=10, per_user=6)
    sender = Sender(app.app_url)
    sender.send(in_rounds(messages))
    wait_until_delivered(app, len(messages))
    result = tally(
        app, sender, messages, scenario="Graph API down", injected="40 x 503 from /messages",
        started=started,
    )  # fmt: skip
    settle(app, result)


def test_duplicate_and_concurrent_deliveries_at_volume_are_answered_once(
    stack: Callable[..., Stack],
) -> None:
    app = stack()
    started = time.monotonic()
    messages = conversation("duplicates", users=40, per_user=5)
    # Every message three times, the copies racing each other, and Meta-style batches
    # of five that overlap the singles; shuffled so copies land on different workers.
    shuffle = random.Random(7).shuffle
    rounds = []
    for batches in in_rounds(messages):
        batch = [single for [single] in batches]
        batches = batches * 3 + [batch[i : i + 5] for i in range(0, len(batch), 5)]
        shuffle(batches)
        rounds.append(batches)
    webhooks = sum(len(batches) for batches in rounds)
    sender = Sender(app.app_url, threads=12)
    sender.send(rounds)
    wait_until_delivered(app, len(messages))
    result = tally(
        app, sender, messages, scenario="duplicate and concurrent deliveries",
        injected=f"{webhooks} webhooks for {len(messages)} messages (3 racing copies "
        "+ overlapping batches of 5)",
        started=started,
    )  # fmt: skip
    assert result.deliveries >= webhooks
    settle(app, result)


def test_sqlite_locked_by_another_writer_loses_nothing(stack: Callable[..., Stack]) -> None:
    app = stack(app_env={"SQLITE_BUSY_TIMEOUT": "1"})
    started = time.monotonic()
    messages = conversation("sqlite-locked", users=10, per_user=6)
    sender = Sender(app.app_url, threads=4)
    sending = sender.send_in_background(in_rounds(messages), pace=0.05)
    path = app.database_url.removeprefix("sqlite:///")
    for _ in range(2):
        time.sleep(0.5)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock longer than the timeout
        time.sleep(3)
        blocker.execute("ROLLBACK")
        blocker.close()
    sending.result(timeout=180)
    wait_until_delivered(app, len(messages))
    result = tally(
        app, sender, messages, scenario="SQLite locked / busy",
        injected="another writer holds the write lock 2 x 3 s (busy timeout 1 s)",
        started=started,
    )  # fmt: skip
    assert sender.failed_deliveries > 0  # some webhooks really hit the lock
    settle(app, result)


class PrivateRedis:
    """A Redis server of one test's own, so that it can be killed and restarted; it keeps
    nothing on disk, like the machine's."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.server: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.server = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not reachable("127.0.0.1", self.port):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.kill()  # SIGKILL: no chance to save anything
            self.server.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    redis.kill()


def test_redis_restarted_under_load_on_postgres_loses_nothing(
    stack: Callable[..., Stack], private_redis: PrivateRedis
) -> None:
    need(reachable("127.0.0.1", 5432), "PostgreSQL is not running on 127.0.0.1:5432")
    with postgres_database("mc_fault") as database_url:
        app = stack(
            database_url=database_url,
            redis_url=private_redis.url,
            sandbox_env={"SANDBOX_MKA1_LATENCY_MS": "100"},
        )
        started = time.monotonic()
        messages = conversation("redis-restart", users=20, per_user=5)
        sender = Sender(app.app_url, threads=4)
        sending = sender.send_in_background(in_rounds(messages), pace=0.03)
        while len(sender.acknowledged) < 30:
            time.sleep(0.05)
        private_redis.kill()  # queued and scheduled tasks are gone
        time.sleep(2)
        private_redis.start()
        sending.result(timeout=180)
        wait_until_delivered(app, len(messages), timeout=180)
        result = tally(
            app, sender, messages, scenario="Redis restarted under load (PostgreSQL + Redis)",
            injected="SIGKILL to Redis (no persistence) after 30 acknowledgements, 2 s down",
            started=started,
        )  # fmt: skip
        settle(app, result)
        app.stop()
