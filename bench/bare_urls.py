"""The product's URLs plus two baselines for `bench/webhook_ingest.py` (through
`bench.bare_settings`), served by the same gunicorn, settings and middleware:

- `POST /bench/bare`: read the body, answer 200 "ok". The ceiling of what one Django
  view can be served at, with no database.
- `POST /bench/minimal`: the least a durable webhook can do: check the
  X-Hub-Signature-256 HMAC, one hand-written `INSERT` of the body into the deliveries'
  table (autocommit: committed before the 200), answer 200. No DRF, no queue. The row
  is written as processed already, so the worker's fan-out never sees it.
"""

from functools import cache

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from audit.toolkit import db_datetime, db_names
from multichannel.urls import urlpatterns as product_urlpatterns
from whatsapp.models import WebhookDelivery
from whatsapp.services import signature_valid


@csrf_exempt
@require_POST
def bare(request: HttpRequest) -> HttpResponse:
    request.read()
    return HttpResponse("ok", content_type="text/plain; charset=utf-8")


@cache
def _minimal_insert() -> str:
    """The minimal view's INSERT, built once (names from the model)."""
    quote = connection.ops.quote_name
    table, *names = db_names(
        WebhookDelivery,
        "received_at",
        "object",
        "raw_body",
        "message_count",
        "status_count",
        "processed_at",
        "fan_out_error",
    )
    columns = ", ".join(quote(name) for name in names)
    return f"INSERT INTO {quote(table)} ({columns}) VALUES (%s, %s, %s, 0, 0, %s, '')"


@csrf_exempt
@require_POST
def minimal(request: HttpRequest) -> HttpResponse:
    body = request.read()
    header = request.META.get("HTTP_X_HUB_SIGNATURE_256", "")
    if not signature_valid(body=body, header=header, app_secret=settings.WHATSAPP_APP_SECRET):
        return HttpResponse("signature mismatch", status=403, content_type="text/plain")
    now = db_datetime(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(_minimal_insert(), [now, "bench", body.decode(), now])
    return HttpResponse("ok", content_type="text/plain; charset=utf-8")


urlpatterns = [
    path("bench/bare", bare, name="bench-bare"),
    path("bench/minimal", minimal, name="bench-minimal"),
    *product_urlpatterns,
]
