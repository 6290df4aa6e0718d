"""Gunicorn settings for the production profile:

    gunicorn -c python:multichannel.gunicorn multichannel.wsgi

Threads, not processes, carry the concurrency: requests wait on the database and on
MKA1 (web retrievals), not on the CPU. Every value can be overridden on the command line
or with GUNICORN_CMD_ARGS.
"""

import multiprocessing
import os
import re
from typing import Any

from gunicorn.glogging import Logger  # type: ignore[import-untyped]

_SIGN_IN_TOKEN = re.compile(r"/signin/[^/?\s]+")


def redact_sign_in_tokens(text: str) -> str:
    return _SIGN_IN_TOKEN.sub("/signin/[redacted]", text)


class RedactingLogger(Logger):  # type: ignore[misc]
    """Access log lines without sign-in tokens (they are in the link's path)."""

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for key in ("U", "r"):
            if isinstance(atoms.get(key), str):
                atoms[key] = redact_sign_in_tokens(atoms[key])
        return atoms


bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", min(4, multiprocessing.cpu_count() + 1)))
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
accesslog = "-"
errorlog = "-"
# No query strings in the access log: sign-in tokens and ids stay out of it.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms "%({x-request-id}o)s"'
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
