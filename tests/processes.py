"""Running the product as real processes for the tests that need it: the production
profile (gunicorn + a queue consumer) and a sandbox server playing MKA1 and the Graph
API over HTTP, each startable, stoppable and killable on its own."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import requests

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
APP_SECRET = "test-app-secret-not-real"
SECRET_KEY = "test-secret-" + "0123456789abcdefghij" * 3


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


def wait_for(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass  # not up yet, or too busy starting to answer
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MKA1_", "WHATSAPP_"))}


class Stack:
    """The app in its production profile (DEBUG off, real HTTP to MKA1 and Graph) on the
    given database and queue, and a sandbox server standing in for both services."""

    def __init__(
        self,
        workdir: Path,
        *,
        database_url: str = "",
        redis_url: str = "",
        app_env: dict[str, str] | None = None,
        sandbox_env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.sandbox_port, self.app_port = free_port(), free_port()
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.app_url = f"http://127.0.0.1:{self.app_port}"
        self.database_url = database_url or f"sqlite:///{workdir / 'app.sqlite3'}"
        self.sandbox_database_url = f"sqlite:///{workdir / 'sandbox.sqlite3'}"
        self.sandbox_env = {
            **_base_env(),
            "DEBUG": "true",
            "SANDBOX": "true",
            "LOG_FORMAT": "plain",
            "DATABASE_URL": self.sandbox_database_url,
            "REDIS_URL": "",
            "HUEY_SQLITE_PATH": str(workdir / "sandbox-queue.sqlite3"),
            **(sandbox_env or {}),
        }
        self.app_env = {
            **_base_env(),
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
            "HUEY_IMMEDIATE": "false",
            "LOG_FORMAT": "json",
            "MKA1_API_KEY": "test-mka1-key-not-real",
            "MKA1_BASE_URL": f"{self.sandbox_url}/sandbox/mka1",
            "WHATSAPP_GRAPH_URL": f"{self.sandbox_url}/sandbox/graph",
            "WHATSAPP_VERIFY_TOKEN": "test-verify-token",
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_TOKEN": "test-graph-token-not-real",
            "WHATSAPP_PHONE_NUMBER_ID": "100000000000001",
            "WEB_CONCURRENCY": "2",
            "GUNICORN_BIND": f"127.0.0.1:{self.app_port}",
            **(app_env or {}),
        }
        self.log_path = workdir / "logs.txt"
        self._log: IO[str] | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    # --- lifecycle ---------------------------------------------------------------------

    def manage(self, *args: str, sandbox: bool = False, timeout: float = 120) -> str:
        env = self.sandbox_env if sandbox else self.app_env
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"manage.py {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def commands(self) -> dict[str, tuple[list[str], dict[str, str]]]:
        manage = [sys.executable, "manage.py"]
        gunicorn = [sys.executable, "-m", "gunicorn", "-c", "python:multichannel.gunicorn"]
        workers = self.app_env.get("HUEY_WORKERS", "8")
        return {
            "sandbox": (
                [*manage, "runserver", "--noreload", f"127.0.0.1:{self.sandbox_port}"],
                self.sandbox_env,
            ),
            "web": (
                [*gunicorn, "multichannel.wsgi"],
                self.app_env,
            ),
            "consumer": (
                [*manage, "run_huey", "--workers", workers, "--worker-type", "thread"],
                self.app_env,
            ),
        }

    def start(self, name: str) -> None:
        assert name not in self.processes, f"{name} is already running"
        if self._log is None:
            self._log = self.log_path.open("a")
        command, env = self.commands()[name]
        self._log.write(f"--- start {name}\n")
        self._log.flush()
        # A session of its own, so a kill reaches gunicorn's workers too.
        self.processes[name] = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        if name == "sandbox":
            wait_for(f"{self.sandbox_url}/healthz", deadline)
        elif name == "web":
            wait_for(f"{self.app_url}/healthz", deadline)
        else:
            self.wait_for_log("consumer", "started", deadline)

    def wait_for_log(self, name: str, text: str, deadline: float) -> None:
        """Wait until `text` shows up in the log after `name` was last started."""
        marker = f"--- start {name}\n"
        while time.monotonic() < deadline:
            log = self.log_path.read_text()
            if text in log[log.rfind(marker) :]:
                return
            assert self.processes[name].poll() is None, f"{name} exited:\n{log[-3000:]}"
            time.sleep(0.1)
        raise AssertionError(f"{name} never logged {text!r}")

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.wait(timeout=30)
        if self._log is not None:
            self._log.write(f"--- {name} got {sig.name}\n")
            self._log.flush()

    def stop(self) -> None:
        for name in list(self.processes):
            process = self.processes[name]
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill(name)
            self.processes.pop(name, None)
        if self._log is not None:
            self._log.close()
            self._log = None

    def up(self) -> "Stack":
        self.manage("migrate", "-v0", sandbox=True)
        self.manage("migrate", "-v0")
        for name in ("sandbox", "web", "consumer"):
            self.start(name)
        return self

    def log_tail(self, size: int = 4000) -> str:
        return self.log_path.read_text()[-size:]

    # --- the sandbox -------------------------------------------------------------------

    def sandbox_fault(self, *args: str) -> None:
        self.manage("sandbox_fault", *args, sandbox=True)


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
