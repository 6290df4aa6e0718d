"""Limits per end user, kept in the shared cache (Redis in production, so every web and
worker machine counts together).

The sender's token bucket is only ever touched by the worker holding that user's lease,
so reading and writing it needs no atomic operation; the counters that web requests
share use the cache's atomic `add` and `incr`."""

import time

from django.conf import settings
from django.core.cache import cache


def sender_token_take(*, end_user_id: str) -> bool:
    """Take one token from this user's bucket of MKA1-bound messages; False when it is
    empty. SENDER_BURST tokens, one more every SENDER_REFILL_SECONDS."""
    burst = settings.SENDER_BURST
    refill = settings.SENDER_REFILL_SECONDS
    key = f"limits:sender:{end_user_id}"
    now = time.time()
    tokens, since = cache.get(key) or (float(burst), now)
    tokens = min(float(burst), tokens + max(0.0, now - since) / refill)
    allowed = tokens >= 1.0
    if allowed:
        tokens -= 1.0
    # Kept until the bucket would be full again; after that a missing key means full.
    cache.set(key, (tokens, now), timeout=int(burst * refill) + 1)
    return allowed


def sender_notice_due(*, end_user_id: str) -> bool:
    """True once per SENDER_LIMIT_NOTICE_SECONDS: whether to tell the user to slow down."""
    key = f"limits:sender-notice:{end_user_id}"
    return bool(cache.add(key, 1, timeout=settings.SENDER_LIMIT_NOTICE_SECONDS))


def window_count(key: str, *, seconds: int) -> int:
    """How many times `key` was counted in the current fixed window of `seconds`,
    this time included."""
    window = int(time.time()) // seconds
    full_key = f"limits:{key}:{window}"
    cache.add(full_key, 0, timeout=seconds + 60)
    try:
        return int(cache.incr(full_key))
    except ValueError:  # expired between add and incr
        cache.add(full_key, 1, timeout=seconds + 60)
        return 1


def seconds_left_in_window(seconds: int) -> int:
    return seconds - int(time.time()) % seconds
