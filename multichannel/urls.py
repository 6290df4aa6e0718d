from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from multichannel.health import healthz
from multichannel.metrics import metrics_view

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("audit/", include("audit.urls")),
    path("whatsapp/", include("whatsapp.urls")),
    path("api/schema", SpectacularAPIView.as_view(), name="api-schema"),
    path("", include("web.urls")),
]

if settings.SANDBOX:
    # Stand-ins for MKA1 and the WhatsApp Graph API; never mounted in production
    # (system check multichannel.E002 refuses SANDBOX with DEBUG off).
    urlpatterns.append(path("sandbox/", include("multichannel.sandbox.urls")))
