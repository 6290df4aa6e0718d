"""The product as real processes, for the tests and benchmarks that need them: the
production profile (gunicorn + a queue consumer, DEBUG off, real HTTP to MKA1 and the
Graph API) and a sandbox server playing both services, each startable, stoppable and
killable on its own; scratch PostgreSQL databases; raw reads of a database by URL.

Nothing here imports Django, so a benchmark can build its stack before it sets Django up.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import requests

ROOT = Path(__file__).resolve().parents[2]
POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")

# Obviously fake credentials: nothing here ever reaches Meta or MKA1.
APP_SECRET = "test-app-secret-not-real"
MKA1_API_KEY = "test-mka1-key-not-real"
GRAPH_TOKEN = "test-graph-token-not-real"
SECRET_KEY = "test-secret-" + "0123456789abcdefghij" * 3
METRICS_TOKEN = "test-metrics-token-not-real"

GUNICORN = [sys.executable, "-m", "gunicorn"]
MANAGE = [sys.executable, "manage.py"]
# Variables of the caller's environment that would point a process elsewhere or size it
# differently; a stack sets what it needs of them explicitly.
_NOT_INHERITED = (
    "MKA1_",
    "WHATSAPP_",
    "HUEY_",
    "GUNICORN_",
    "WEB_CONCURRENCY",
    "API_THROTTLE",
    "SANDBOX_",
)


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, deadline: float, process: "subprocess.Popen[bytes] | None" = None) -> None:
    """Wait until `url` answers below 500; fail early if `process` (its server) exits."""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server for {url} exited with {process.returncode}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass  # not up yet, or too busy starting to answer
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


@contextmanager
def postgres_database(prefix: str, server: str = POSTGRES) -> Iterator[str]:
    """A new, empty PostgreSQL database on `server`, dropped afterwards; its URL."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def query(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of one read-only query against a database named by its URL."""
    if database_url.startswith("sqlite:///"):
        import sqlite3

        lite = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=30)
        try:
            return lite.execute(sql).fetchall()
        finally:
            lite.close()
    import psycopg

    with psycopg.connect(database_url) as connection:
        return connection.execute(sql).fetchall()  # type: ignore[arg-type]


# What the test settings set for the app; `run_manage` starts from the product's defaults.
_APP_VARS = {
    "SITE_URL",
    "CACHE_URL",
    "CACHE_DIR",
    "REDIS_URL",
    "SECRET_KEY",
    "DEBUG",
    "MKA1_API_KEY",
    "SANDBOX",
    "MKA1_BASE_URL",
    "MKA1_CHAIN_MODE",
    "SECURE_SSL_REDIRECT",
    "LOG_FORMAT",
    "HUEY_IMMEDIATE",
    "WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_TOKEN",
    "WHATSAPP_PHONE_NUMBER_ID",
}


# What a production deployment sets (DEBUG off, real-looking secrets, https links).
PRODUCTION_ENV = {
    "DEBUG": "false",
    "SANDBOX": "false",
    "SECRET_KEY": "test-" + "k" * 60,
    "MKA1_API_KEY": "test-mka1-key-not-real",
    "ALLOWED_HOSTS": "multichannel.example.test",
    "SITE_URL": "https://multichannel.example.test",
    "WHATSAPP_VERIFY_TOKEN": "test-verify",
    "WHATSAPP_APP_SECRET": "test-app-secret",
    "WHATSAPP_TOKEN": "test-token",
    "WHATSAPP_PHONE_NUMBER_ID": "123",
}


def run_manage(tmp_path: Path, *args: str, **env: str) -> "subprocess.CompletedProcess[str]":
    """`manage.py <args>` on a SQLite database in `tmp_path`, with none of the app's
    variables the tests set, plus `env`: how a fresh machine's configuration behaves."""
    clean = {k: v for k, v in os.environ.items() if k not in _APP_VARS}
    clean.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", **env})
    return subprocess.run(
        [*MANAGE, *args],
        cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _environment(*layers: Mapping[str, str | None]) -> dict[str, str]:
    """The caller's environment without what would redirect a process, then each layer
    in turn; a value of None removes the variable (the product's default applies)."""
    env: dict[str, str | None] = {
        key: value for key, value in os.environ.items() if not key.startswith(_NOT_INHERITED)
    }
    for layer in layers:
        env.update(layer)
    return {key: value for key, value in env.items() if value is not None}


class Stack:
    """The app in its production profile on the given database and queue (SQLite files
    in `workdir` unless told otherwise), and a sandbox server standing in for MKA1 and the
    Graph API. `app_env` and `sandbox_env` add to or override each side's environment;
    `commands` may be changed before a process starts (a benchmark serves the sandbox
    differently). Each process logs to `<workdir>/<name>.log`."""

    def __init__(
        self,
        workdir: Path,
        *,
        database_url: str = "",
        redis_url: str = "",
        app_env: Mapping[str, str | None] | None = None,
        sandbox_env: Mapping[str, str | None] | None = None,
    ) -> None:
        self.workdir = workdir
        (workdir / "metrics").mkdir(parents=True, exist_ok=True)
        self.sandbox_port, self.app_port = free_port(), free_port()
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.app_url = f"http://127.0.0.1:{self.app_port}"
        self.database_url = database_url or f"sqlite:///{workdir / 'app.sqlite3'}"
        self.sandbox_database_url = f"sqlite:///{workdir / 'sandbox.sqlite3'}"
        self.sandbox_env = _environment(
            {
                "DJANGO_SETTINGS_MODULE": "multichannel.settings",
                "DEBUG": "true",
                "SANDBOX": "true",
                "LOG_FORMAT": "plain",
                "DATABASE_URL": self.sandbox_database_url,
                "REDIS_URL": "",
                "HUEY_SQLITE_PATH": str(workdir / "sandbox-queue.sqlite3"),
            },
            sandbox_env or {},
        )
        self.app_env = _environment(
            {
                "DJANGO_SETTINGS_MODULE": "multichannel.settings",
                "DEBUG": "false",
                "SANDBOX": "false",
                "SECRET_KEY": SECRET_KEY,
                "ALLOWED_HOSTS": "127.0.0.1",
                # Links are https in production (multichannel.E012); no test follows one.
                "SITE_URL": "https://127.0.0.1",
                "SECURE_SSL_REDIRECT": "false",  # plain HTTP on loopback
                "DATABASE_URL": self.database_url,
                "REDIS_URL": redis_url,
                "HUEY_SQLITE_PATH": str(workdir / "queue.sqlite3"),
                "CACHE_DIR": str(workdir / "cache"),
                "MEDIA_ROOT": str(workdir / "media"),
                # Metrics shared by gunicorn's workers and the consumer, as in production.
                "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
                "METRICS_TOKEN": METRICS_TOKEN,
                "HUEY_IMMEDIATE": "false",
                "LOG_FORMAT": "json",
                "MKA1_API_KEY": MKA1_API_KEY,
                "MKA1_BASE_URL": f"{self.sandbox_url}/sandbox/mka1",
                "WHATSAPP_GRAPH_URL": f"{self.sandbox_url}/sandbox/graph",
                "WHATSAPP_VERIFY_TOKEN": "test-verify-token",
                "WHATSAPP_APP_SECRET": APP_SECRET,
                "WHATSAPP_TOKEN": GRAPH_TOKEN,
                "WHATSAPP_PHONE_NUMBER_ID": "100000000000001",
                "WEB_CONCURRENCY": "2",
                "GUNICORN_BIND": f"127.0.0.1:{self.app_port}",
            },
            app_env or {},
        )
        workers = self.app_env.get("HUEY_WORKERS", "8")
        self.commands: dict[str, list[str]] = {
            "sandbox": [*MANAGE, "runserver", "--noreload", f"127.0.0.1:{self.sandbox_port}"],
            "web": [*GUNICORN, "-c", "python:multichannel.gunicorn", "multichannel.wsgi"],
            "consumer": [*MANAGE, "run_huey", "--workers", workers, "--worker-type", "thread"],
        }
        self._logs: dict[str, IO[str]] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    # --- lifecycle ---------------------------------------------------------------------

    def env(self, name: str) -> dict[str, str]:
        return self.sandbox_env if name == "sandbox" else self.app_env

    def run(
        self, *args: str, sandbox: bool = False, env: Mapping[str, str] | None = None,
        timeout: float = 300,
    ) -> "subprocess.CompletedProcess[str]":  # fmt: skip
        """`manage.py <args>` with the app's (or the sandbox's) environment, to the end."""
        return subprocess.run(
            [*MANAGE, *args],
            cwd=ROOT, env={**(self.sandbox_env if sandbox else self.app_env), **(env or {})},
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def manage(self, *args: str, sandbox: bool = False, timeout: float = 300) -> str:
        """`manage.py <args>`, which must succeed; what it printed."""
        done = self.run(*args, sandbox=sandbox, timeout=timeout)
        assert done.returncode == 0, f"manage.py {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def start(self, name: str) -> None:
        assert name not in self.processes, f"{name} is already running"
        log = self._logs.get(name)
        if log is None:
            log = self._logs[name] = self.log_path(name).open("a")
        log.write(f"--- start {name}\n")
        log.flush()
        # A session of its own, so a signal reaches gunicorn's workers too.
        self.processes[name] = process = subprocess.Popen(
            self.commands[name], cwd=ROOT, env=self.env(name), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        if name == "consumer":
            self.wait_for_log("consumer", "started", deadline)
        else:
            url = self.sandbox_url if name == "sandbox" else self.app_url
            wait_for(f"{url}/healthz", deadline, process)

    def wait_for_log(self, name: str, text: str, deadline: float) -> None:
        """Wait until `text` shows up in the log after `name` was last started."""
        marker = f"--- start {name}\n"
        while time.monotonic() < deadline:
            log = self.log_path(name).read_text(errors="replace")
            if text in log[log.rfind(marker) :]:
                return
            assert self.processes[name].poll() is None, f"{name} exited:\n{log[-3000:]}"
            time.sleep(0.1)
        raise AssertionError(f"{name} never logged {text!r}")

    def kill(
        self, name: str, sig: signal.Signals = signal.SIGKILL, timeout: float = 30
    ) -> int | None:
        """Send `sig` to `name` and every process it started, and wait for it to exit: its
        exit status, or None when it outlived `timeout` and was SIGKILLed."""
        process = self.processes.pop(name)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        status: int | None
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
            status = None
        if name in self._logs:
            self._logs[name].write(f"--- {name} got {sig.name}\n")
            self._logs[name].flush()
        return status

    def stop(self) -> list[str]:
        """SIGTERM to everything still running; the names of those that had to be killed."""
        killed = [
            name for name in list(self.processes) if self.kill(name, signal.SIGTERM, 20) is None
        ]
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        return killed

    def up(self) -> "Stack":
        self.manage("migrate", "-v0", sandbox=True)
        self.manage("migrate", "-v0")
        for name in ("sandbox", "web", "consumer"):
            self.start(name)
        return self

    def log_text(self) -> str:
        """Every process's log, one after the other."""
        paths = sorted(self.workdir.glob("*.log"))
        return "".join(path.read_text(errors="replace") for path in paths)

    def log_tail(self, size: int = 4000) -> str:
        tails = []
        for path in sorted(self.workdir.glob("*.log")):
            tails.append(f"=== {path.name}\n{path.read_text(errors='replace')[-size:]}")
        return "\n".join(tails)

    # --- the sandbox and the ledger ----------------------------------------------------

    def sandbox_fault(self, *args: str) -> None:
        self.manage("sandbox_fault", *args, sandbox=True)

    def verify_audit(self, *, events: int | None = None) -> tuple[bool, str]:
        """Whether `manage.py verify_audit` accepts the app's ledger (holding exactly
        `events` events, when given), and its report line or the problem."""
        done = self.run("verify_audit", timeout=600)
        expected = "OK: " if events is None else f"OK: {events} events"
        if done.returncode or not done.stdout.startswith(expected):
            return (
                False,
                f"verify_audit: {done.returncode} {done.stdout[:200]} {done.stderr[-500:]}",
            )
        return True, done.stdout.strip()
