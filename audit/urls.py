from django.urls import path

from audit.views import checkpoint_latest_view

app_name = "audit"
urlpatterns = [path("checkpoint", checkpoint_latest_view, name="checkpoint")]
