"""The counters behind the web API's rate limits (`multichannel.limits.counted`) and the
end-user throttle built on them: atomic under concurrent requests, a window that opens
at the first request, a Retry-After that says when it lapses. On PostgreSQL runs the
cache is Redis (one pipelined round trip); on the embedded defaults, process memory."""

import threading
import time
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.redis import RedisCache

from multichannel.limits import counted, counted_together, window_count, window_key
from multichannel.models import EndUser
from web.auth import ReadThrottle

on_redis = isinstance(caches[DEFAULT_CACHE_ALIAS], RedisCache)


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    cache.clear()


def test_counts_up_from_one_and_lapses_after_its_window() -> None:
    assert [counted("k", seconds=60)[0] for _ in range(3)] == [1, 2, 3]
    _, left = counted("k", seconds=60)
    if on_redis:
        assert left is not None
        assert 0 < left <= 60
    else:
        assert left is None  # the cache cannot say; the throttle then answers the window
    assert counted("other", seconds=60)[0] == 1
    assert counted("short", seconds=1)[0] == 1
    time.sleep(2.1)
    assert counted("short", seconds=1)[0] == 1  # lapsed: a new window


def test_the_count_is_what_add_and_get_see() -> None:
    # On Redis the pipeline INCRs the cache's own key, as an integer: the generic
    # cache API reads the same count (and a window_count agrees with itself).
    counted("shared", seconds=60)
    counted("shared", seconds=60)
    assert cache.get("shared") == 2
    assert window_count("daily", seconds=3600) == 1
    assert window_count("daily", seconds=3600) == 2


def test_counters_counted_together_keep_their_own_counts_and_windows() -> None:
    # The retrieval's read rate and daily allowance, in one round trip on Redis.
    counted("a", seconds=60)
    together = counted_together(("a", 60), window_key("b", seconds=3600), ("c", 1))
    assert [count for count, _ in together] == [2, 1, 1]
    assert window_count("b", seconds=3600) == 2  # the same window key as window_count's
    if on_redis:
        lefts = [left or 0 for _, left in together]
        assert 0 < lefts[0] <= 60
        assert 3600 < lefts[1] <= 3660
        assert 0 < lefts[2] <= 1
    time.sleep(2.1)
    # "c" lapsed on its own; "a" did not.
    assert [count for count, _ in counted_together(("a", 60), ("c", 1))] == [3, 1]


def test_the_redis_cache_keeps_one_client_per_pool() -> None:
    backend = caches[DEFAULT_CACHE_ALIAS]
    if not on_redis:
        assert settings.CACHES["default"]["BACKEND"] != "multichannel.cache.RedisCache"
        return
    assert isinstance(backend, RedisCache)
    django: Any = backend
    client = django._cache.get_client(write=True)
    assert django._cache.get_client("any key", write=True) is client
    backend.set("k", 7)
    assert backend.get("k") == 7  # Django's own wire format, through the kept client


def test_concurrent_requests_each_get_their_own_count() -> None:
    # What DRF's read-modify-write history cannot give: 16 requests at once, 16 counts.
    start = threading.Barrier(16)
    counts: list[int] = []

    def one() -> None:
        start.wait()
        counts.append(counted("burst", seconds=60)[0])

    threads = [threading.Thread(target=one) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(counts) == list(range(1, 17))


def test_the_read_throttle_refuses_past_its_rate_and_says_when_to_retry(
    end_user: EndUser, web_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ReadThrottle, "THROTTLE_RATES", {"read": "3/hour"})
    browser = web_client(end_user)
    codes = [browser.get("/api/conversation").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    retry_after = int(browser.get("/api/conversation")["Retry-After"])
    if on_redis:
        assert 3500 < retry_after <= 3600  # what is left of the window, not a guess
    else:
        assert retry_after == 3600
    # Another person has their own count.
    other = web_client(EndUser.objects.create())
    assert other.get("/api/conversation").status_code == 200
