"""Limits per end user, kept in the shared cache (Redis in production, so every web and
worker machine counts together).

The sender's token bucket is only ever touched by the worker holding that user's lease,
so reading and writing it needs no atomic operation; the counters that web requests
share are counted by `counted` (atomic on Redis and in process memory)."""

import time
from typing import Any, cast

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.redis import RedisCache

# A rate's period is read by its first letter, as Django REST framework reads it: "min",
# "minute" and "m" are all a minute.
RATE_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def rate_parse(rate: str) -> tuple[int, int]:
    """`"120/min"` -> (120, 60): how many, in how many seconds. ValueError otherwise."""
    number, _, period = str(rate).partition("/")
    if not number.isdigit() or int(number) < 1 or period[:1] not in RATE_PERIODS:
        raise ValueError(f"{rate!r} is not a rate like 120/min (s, min, hour or day)")
    return int(number), RATE_PERIODS[period[:1]]


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
    key, keep = window_key(key, seconds=seconds)
    count, _ = counted(key, seconds=keep)
    return count


def window_key(key: str, *, seconds: int) -> tuple[str, int]:
    """The counter of `key` in the current fixed window of `seconds`, and how long to
    keep its count: a (key, seconds) pair for `counted_together`."""
    return f"{key}:{int(time.time()) // seconds}", seconds + 60


def counted(key: str, *, seconds: int) -> tuple[int, int | None]:
    """Count `key` once more: (its count, this time included; seconds until it lapses,
    or None when the cache cannot say). A count lapses `seconds` after its first time."""
    return counted_together((key, seconds))[0]


def counted_together(*counters: tuple[str, int]) -> list[tuple[int, int | None]]:
    """`counted` for each (key, seconds), in one round trip on Redis.

    On Redis, SET NX EX, INCR and TTL of every key go in one pipeline (the hot path of
    every throttled request), each counter atomic; on other caches Django's add/incr
    pair, atomic in process memory, while the file cache can give two requests at the
    same moment the same count (Redis is what production runs with several machines)."""
    backend = caches[DEFAULT_CACHE_ALIAS]  # `cache` is a proxy: isinstance sees the proxy
    if isinstance(backend, RedisCache):
        keys = [backend.make_and_validate_key(key) for key, _ in counters]
        # Django's Redis cache stores integers as plain Redis integers, so INCR works
        # on what `add`/`get` see; its client has no pipeline, so the raw one is used.
        client = cast(Any, backend)._cache.get_client(keys[0], write=True)
        pipe = client.pipeline(transaction=False)
        for full_key, (_, seconds) in zip(keys, counters, strict=True):
            pipe.set(full_key, 0, ex=seconds, nx=True)
            pipe.incr(full_key)
            pipe.ttl(full_key)
        replies = pipe.execute()
        return [
            (int(count), int(left) if left >= 0 else None)
            for count, left in zip(replies[1::3], replies[2::3], strict=True)
        ]
    return [(_counted_in_django_cache(key, seconds), None) for key, seconds in counters]


def _counted_in_django_cache(key: str, seconds: int) -> int:
    cache.add(key, 0, timeout=seconds)
    try:
        return int(cache.incr(key))
    except ValueError:  # lapsed between add and incr
        cache.add(key, 1, timeout=seconds)
        return 1


def seconds_left_in_window(seconds: int) -> int:
    return seconds - int(time.time()) % seconds
