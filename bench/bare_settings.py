"""The product's settings with one extra URL: a bare Django view for benchmarks.

`bench/webhook_ingest.py` runs gunicorn with DJANGO_SETTINGS_MODULE=bench.bare_settings,
so the WhatsApp webhook and the bare view are served by the same processes, the same
middleware and the same gunicorn configuration; the bare view's rate is the ceiling a
Django view can reach on that machine.
"""

from multichannel.settings import *  # noqa: F403

ROOT_URLCONF = "bench.bare_urls"
