"""GET /healthz: can this process reach its database and its queue? It also says how
the ledger's signed checkpoints are doing, without that changing the status: a witness
being down is for an operator to look at, not a reason to take the app out of service."""

import logging

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from huey.contrib.djhuey import HUEY

from audit.publishing import checkpoint_health

logger = logging.getLogger(__name__)


def _database() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return bool(cursor.fetchone() == (1,))
    except Exception:  # any failure means "not reachable"; the reason goes to the log
        logger.exception("health: database unreachable")
        return False


def _queue() -> bool:
    try:
        HUEY.storage.queue_size()
    except Exception:  # as above
        logger.exception("health: queue unreachable")
        return False
    return True


def _checkpoints(database_ok: bool) -> str:
    if not database_ok:
        return "unknown"
    try:
        return checkpoint_health()
    except Exception:  # as above
        logger.exception("health: checkpoint state unreadable")
        return "unknown"


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database(), "queue": _queue()}
    healthy = all(checks.values())
    return JsonResponse(
        {
            "status": "ok" if healthy else "unavailable",
            **{name: "ok" if ok else "unreachable" for name, ok in checks.items()},
            "checkpoints": _checkpoints(checks["database"]),
        },
        status=200 if healthy else 503,
    )
