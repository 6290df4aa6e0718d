"""Where a webhook's time goes, in this process: signed webhooks through Django's test
client (the product's settings, `DEBUG=false`, the database and queue of the
environment), under cProfile, each function's own time assigned to one category.
Optionally the worker's fan-out of the same deliveries, profiled the same way.

    DEBUG=false DATABASE_URL=sqlite:////tmp/profile.sqlite3 \\
        .venv/bin/python bench/webhook_profile.py --texts 2000 --statuses 2000

It migrates the database named by DATABASE_URL (use a scratch one: it adds senders,
messages and deliveries) and, with no REDIS_URL, a scratch SQLite queue in a temporary
folder. The first table is the request (verify, keep, enqueue); the second the fan-out.
cProfile inflates Python-heavy code; the wall time without the profiler is measured
separately on the same kind of request.
"""

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import benchkit  # noqa: F401  (puts the project root on sys.path)

# Checked in order: the first fragment found in a function's file (or C function's
# name) decides its category.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("HMAC signature, body read, json.loads", ("hmac", "hashlib", "/json/", "_json")),
    ("logging", ("/logging/", "multichannel/observability.py", "multichannel/redaction.py")),
    ("metrics", ("prometheus_client",)),
    ("enqueue (Huey)", ("/huey/", "pickle", "sqlite3.Connection", "redis")),
    ("database driver (sqlite3 / psycopg)", ("sqlite3.Cursor", "psycopg", "sqlite3")),
    ("ORM and SQL", ("django/db/",)),
    ("DRF", ("rest_framework",)),
    ("payload parsing, view and services", ("whatsapp/", "multichannel/", "audit/")),
    ("Django request handling and middleware", ("django/", "csp/", "axes/")),
]
OTHER = "other (interpreter, standard library)"


def category(filename: str, function: str) -> str:
    where = f"{filename} {function}"
    for name, fragments in CATEGORIES:
        if any(fragment in where for fragment in fragments):
            return name
    return OTHER


def breakdown(profile: cProfile.Profile, count: int) -> dict[str, float]:
    """Milliseconds of own time per item, by category."""
    stats = pstats.Stats(profile)
    totals: dict[str, float] = defaultdict(float)
    for (filename, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        own_seconds = row[2]
        totals[category(filename, function)] += own_seconds
    return {name: seconds * 1000 / count for name, seconds in totals.items()}


def print_table(title: str, wall_ms: float, parts: dict[str, float]) -> None:
    total = sum(parts.values())
    print(f"\n{title}")
    print("| ms per item (share of the profiled time) | |")
    print("|---|---:|")
    print(f"| wall, without the profiler | {wall_ms:.2f} |")
    print(f"| profiled, all | {total:.2f} |")
    for name, ms in sorted(parts.items(), key=lambda item: -item[1]):
        print(f"| {name} | {ms:.2f} ({ms / total:.0%}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000, help="text webhooks, known senders")
    parser.add_argument("--statuses", type=int, default=2000, help="status webhooks")
    parser.add_argument("--senders", type=int, default=200)
    parser.add_argument("--no-fan-out", action="store_true", help="profile the request only")
    args = parser.parse_args()

    from tests.support import stack

    scratch = Path(tempfile.mkdtemp(prefix="mc-profile-"))
    # The production profile, as the benchmarks' stack runs it (tests/support/stack.py).
    for name, value in {
        "DJANGO_SETTINGS_MODULE": "multichannel.settings",
        "DEBUG": "false",
        "SECRET_KEY": stack.SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SITE_URL": "https://127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "HUEY_SQLITE_PATH": str(scratch / "queue.sqlite3"),
        "CACHE_DIR": str(scratch / "cache"),
        "MEDIA_ROOT": str(scratch / "media"),
        "LOG_FORMAT": "json",
        "MKA1_API_KEY": stack.MKA1_API_KEY,
        "WHATSAPP_APP_SECRET": stack.APP_SECRET,
        "WHATSAPP_TOKEN": stack.GRAPH_TOKEN,
        "WHATSAPP_PHONE_NUMBER_ID": "100000000000001",
    }.items():
        os.environ.setdefault(name, value)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from multichannel.models import Channel, UserMessage
    from multichannel.sandbox import whatsapp as wa
    from tests.support.webhooks import webhook_post
    from whatsapp.models import OutboundMessage, WebhookDelivery
    from whatsapp.services import delivery_fan_out, identity_resolve

    call_command("migrate", verbosity=0)
    phones = [f"1556{n:07d}" for n in range(args.senders)]
    identities = [identity_resolve(wa_id=phone, bsuid=None) for phone in phones]
    run = int(time.time())
    outbound = []
    for n in range(args.statuses):
        message = UserMessage.objects.create(
            end_user_id=identities[n % len(identities)].end_user_id,
            channel=Channel.WHATSAPP,
            text="q",
            sent_at=timezone.now(),
        )
        outbound.append(
            OutboundMessage.objects.create(
                user_message=message,
                wamid=f"wamid.PROFILE{run}O{n}",
                recipient=phones[n % len(phones)],
                text="a",
            )
        )
    texts = [
        wa.encode(
            wa.webhook_payload(
                [
                    wa.message_event(
                        wa_id=phones[n % len(phones)],
                        text=f"profile {n}",
                        message_id=f"wamid.PROFILE{run}T{n}",
                    )
                ]
            )
        )
        for n in range(args.texts)
    ]
    statuses = [
        wa.encode(wa.webhook_payload(statuses=[wa.status_event(str(message.wamid), "delivered")]))
        for message in outbound
    ]
    client = Client(SERVER_NAME="127.0.0.1")
    post: Callable[[bytes], object] = lambda body: webhook_post(body, client=client)  # noqa: E731

    def timed(bodies: list[bytes]) -> float:
        started = time.perf_counter()
        for body in bodies:
            post(body)
        return (time.perf_counter() - started) * 1000 / max(len(bodies), 1)

    half = len(texts) // 2
    wall_texts = timed(texts[:half])  # unprofiled: the wall time
    profile = cProfile.Profile()
    profile.enable()
    for body in texts[half:]:
        post(body)
    profile.disable()
    queue = "Redis" if os.environ.get("REDIS_URL") else "SQLite"
    print(f"database: {connection.vendor}; queue: {queue}")
    print_table(
        f"text webhook, the request ({len(texts) - half} profiled, {half} timed)",
        wall_texts,
        breakdown(profile, len(texts) - half),
    )
    if statuses:
        half_statuses = len(statuses) // 2
        wall_statuses = timed(statuses[:half_statuses])
        profile = cProfile.Profile()
        profile.enable()
        for body in statuses[half_statuses:]:
            post(body)
        profile.disable()
        print_table(
            "status webhook, the request",
            wall_statuses,
            breakdown(profile, len(statuses) - half_statuses),
        )
    if args.no_fan_out:
        return
    pending = list(
        WebhookDelivery.objects.filter(processed_at__isnull=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    started = time.perf_counter()
    half_pending = pending[len(pending) // 2]
    delivery_fan_out(half_pending)  # unprofiled: the older half
    wall_fan_out = (time.perf_counter() - started) * 1000 / max(len(pending) // 2, 1)
    rest = WebhookDelivery.objects.filter(processed_at__isnull=True).count()
    profile = cProfile.Profile()
    profile.enable()
    delivery_fan_out(pending[-1])
    profile.disable()
    print_table(
        "fan-out in the worker, per delivery (texts then statuses, in order)",
        wall_fan_out,
        breakdown(profile, rest),
    )


if __name__ == "__main__":
    main()
