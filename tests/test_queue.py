"""The queue through a real consumer process (`manage.py run_huey`), not immediate mode."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection
from huey.contrib.djhuey import HUEY

from multichannel.models import UserMessage
from multichannel.sandbox import whatsapp as wa
from tests.support.outgoing import sent_texts
from tests.support.webhooks import PostWebhook

ROOT = Path(__file__).resolve().parent.parent


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{host}:{port}/{db['NAME']}"


@pytest.fixture
def consumer(request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[str]]:
    """A real consumer on the test database and the test queue, with thread workers;
    parametrized indirectly, the size of its database connection pool."""
    HUEY.immediate = False
    HUEY.flush()
    # DEBUG on: the sandbox stands in for MKA1 and Graph, which production refuses.
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "HUEY_IMMEDIATE": "false",
        "DEBUG": "true",
    }
    pool = getattr(request, "param", None)
    if pool is not None:
        env["DATABASE_POOL_MAX_SIZE"] = str(pool)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_huey", "--workers", "4", "--worker-type", "thread"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        HUEY.flush()
        HUEY.immediate = True


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


# With a pool of one connection (PostgreSQL; SQLite has no pool and ignores it), the
# four threads share it: a thread that kept its connection through an MKA1 or Graph
# call, or called one inside a transaction, would hold up the others past the pool's
# timeout.
@pytest.mark.parametrize("consumer", [None, 1], indirect=True, ids=["own", "pool-of-one"])
@pytest.mark.django_db(transaction=True)
def test_a_real_consumer_answers_queued_messages_in_order(
    consumer: subprocess.Popen[str], post_webhook: PostWebhook
) -> None:
    base = int(time.time())
    for sender in ("15550000001", "15550000002"):
        events = [
            wa.message_event(wa_id=sender, text=f"{sender} {i}", timestamp=base + i)
            for i in range(3)
        ]
        assert post_webhook(wa.webhook_payload(events)).status_code == 200

    def delivered() -> bool:
        assert consumer.poll() is None, "the consumer exited"
        return UserMessage.objects.filter(state="delivered").count() == 6

    if not wait_for(delivered):
        consumer.send_signal(signal.SIGINT)
        output = consumer.communicate(timeout=20)[0]
        pytest.fail(f"consumer did not answer in time:\n{output[-3000:]}")
    for sender in ("15550000001", "15550000002"):
        assert sent_texts(sender) == [f"You said: {sender} {i}" for i in range(3)]
    consumer.send_signal(signal.SIGINT)
    assert consumer.wait(timeout=20) == 0


def test_the_embedded_queue_syncs_like_the_embedded_database(tmp_path: Path) -> None:
    """Write-ahead log, synchronous=NORMAL (1): an enqueue does not wait for the disk,
    and a crash of the process loses nothing committed."""
    from multichannel.queue_storage import SqliteQueue

    queue = SqliteQueue("check", filename=str(tmp_path / "queue.sqlite3"))
    connection = queue.storage.conn
    assert connection.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert connection.execute("pragma synchronous").fetchone()[0] == 1
    queue.storage.enqueue(b"task")
    assert queue.storage.queue_size() == 1


def test_an_enqueue_on_the_embedded_queue_is_one_statement(tmp_path: Path) -> None:
    """The queue file's write lock is held for the INSERT alone (autocommit), not from a
    BEGIN EXCLUSIVE across three calls while the process's other threads run."""
    from multichannel.queue_storage import SqliteQueue

    queue = SqliteQueue("check", filename=str(tmp_path / "queue.sqlite3"))
    statements: list[str] = []
    queue.storage.conn.set_trace_callback(statements.append)
    queue.storage.enqueue(b"task", priority=2)
    queue.storage.conn.set_trace_callback(None)
    assert [sql.split()[0].lower() for sql in statements] == ["insert"]
    assert queue.storage.enqueued_items() == [b"task"]
    assert queue.storage.dequeue() == b"task"


def test_without_redis_the_queue_is_the_embedded_one() -> None:
    from django.conf import settings

    if os.environ.get("REDIS_URL"):
        assert settings.HUEY["huey_class"] == "huey.RedisHuey"
    else:
        assert settings.HUEY["huey_class"] == "multichannel.queue_storage.SqliteQueue"
        assert type(HUEY).__name__ == "SqliteQueue"
