import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError, CommandParser

from audit.accounts import auditor_save
from audit.toolkit import StrictCommand

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")
DEMO_AUDITOR = "auditor"


def child_env(base_url: str) -> dict[str, str]:
    """The web server's and the consumer's environment. Sign-in links (made by the
    consumer) follow the address being served unless SITE_URL says otherwise."""
    env = dict(os.environ)
    if not env.get("SITE_URL"):
        env["SITE_URL"] = base_url
    return env


class Command(StrictCommand):
    help = (
        "Run the web server and the queue consumer together, in the foreground. "
        "Ctrl-C stops both. For development and demos; production runs gunicorn and "
        "run_huey as separate services (see README)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument("--workers", type=int, default=4, help="consumer threads")

    def _demo_auditor(self) -> str:
        """A view-only account to look around the admin with (development only)."""
        if not settings.DEBUG:
            return "(create accounts with create_auditor)"
        if get_user_model().objects.filter(username=DEMO_AUDITOR).exists():
            return f"(user {DEMO_AUDITOR}; its password was printed when it was created)"
        password = secrets.token_urlsafe(12)
        auditor_save(username=DEMO_AUDITOR, password=password)
        return f"(user {DEMO_AUDITOR}, password {password}, shown only this once)"

    def handle(self, *args: Any, **options: Any) -> None:
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1")
        call_command("migrate", interactive=False, verbosity=0)
        base = f"http://{options['addrport']}"
        self.stdout.write(self.style.SUCCESS("Multichannel is starting:"))
        self.stdout.write(f"  web app          {base}/")
        self.stdout.write(f"  admin            {base}/admin/  {self._demo_auditor()}")
        if settings.SANDBOX:
            self.stdout.write(f"  WhatsApp user    {base}/sandbox/whatsapp/  (sandbox phone)")
        self.stdout.write(f"  health           {base}/healthz")
        self.stdout.write("Press Ctrl-C to stop.\n")
        commands = {
            "web server": [sys.executable, MANAGE, "runserver", "--noreload", options["addrport"]],
            "queue consumer": [
                *(sys.executable, MANAGE, "run_huey", "--workers", str(options["workers"])),
                *("--worker-type", "thread"),
            ],
        }
        env = child_env(base)
        # Our own interpreter and manage.py, with arguments we built: no shell, no input.
        children = {
            name: subprocess.Popen(argv, env=env)  # noqa: S603
            for name, argv in commands.items()
        }
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not stopping and all(c.poll() is None for c in children.values()):
                time.sleep(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for child in children.values():
                if child.poll() is None:
                    child.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 15
            for child in children.values():
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
        failed = [
            name for name, child in children.items() if child.returncode not in (0, -signal.SIGINT)
        ]
        if not stopping and failed:
            raise CommandError(
                f"the {failed[0]} exited with status {children[failed[0]].returncode}"
            )
        self.stdout.write("Stopped.")
