from django.urls import re_path

from whatsapp import views

app_name = "whatsapp"

urlpatterns = [
    # With and without the trailing slash, and no redirect: Meta does not follow them.
    re_path(r"^webhook/?$", views.WebhookApi.as_view(), name="webhook"),
]
