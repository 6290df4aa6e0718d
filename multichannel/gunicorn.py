"""Gunicorn settings for the production profile:

    gunicorn -c python:multichannel.gunicorn multichannel.wsgi

Threads, not processes, carry the concurrency: requests wait on the database and on
MKA1 (web retrievals), not on the CPU. Every value can be overridden on the command line
or with GUNICORN_CMD_ARGS.
"""

import os
from typing import Any

from gunicorn.glogging import Logger  # type: ignore[import-untyped]

from multichannel import settings
from multichannel.observability import RedactingFilter
from multichannel.redaction import redact


class RedactingLogger(Logger):  # type: ignore[misc]
    """Gunicorn's own logs without sign-in tokens (they are in the link's path) or
    secrets: the access log's request line and gunicorn's error log alike."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.error_log.addFilter(RedactingFilter())

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for key in ("U", "r"):
            if isinstance(atoms.get(key), str):
                atoms[key] = redact(atoms[key])
        return atoms


bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# The settings module is read here, in the master, on purpose: a configuration the app
# refuses (DEBUG off with the sandbox, a missing secret) stops gunicorn before it binds.
workers = settings.WEB_CONCURRENCY
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# Longer than MKA1_TIMEOUT would be pointless for a web request; the webhook is fast.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "75"))
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then, jitter so not all at once. Each restart reloads Django,
# so rarely enough that its cost per request is negligible (docs/benchmarks.md).
max_requests = 10000
max_requests_jitter = 1000
# No run-time control socket: it defaults to one path per OS user, which every gunicorn
# of that user on the machine would share (and the first to stop would delete).
control_socket_disable = True
logger_class = RedactingLogger


def child_exit(server: Any, worker: Any) -> None:
    # Metrics of a worker that is gone stop counting as live (multiprocess mode).
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


accesslog = "-"
errorlog = "-"
# No query strings in the access log: sign-in tokens and ids stay out of it.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms "%({x-request-id}o)s"'
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
