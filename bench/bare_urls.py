"""The product's URLs plus `POST /bench/bare`: read the body, answer 200 "ok".

Used by `bench/webhook_ingest.py` (through `bench.bare_settings`) as the ceiling of what
one Django view can be served at: same middleware, same gunicorn, no database.
"""

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from multichannel.urls import urlpatterns as product_urlpatterns


@csrf_exempt
@require_POST
def bare(request: HttpRequest) -> HttpResponse:
    request.read()
    return HttpResponse("ok", content_type="text/plain; charset=utf-8")


urlpatterns = [path("bench/bare", bare, name="bench-bare"), *product_urlpatterns]
