"""Django's Redis cache, with one Redis client object per connection pool instead of a
new one for every operation: building a redis-py client (its response callbacks) cost
more CPU than the round trip it made, on every throttled request and every session
read (docs/benchmarks.md). The pools, connections and wire format are Django's own.
`django.core.cache.caches` gives each thread its own cache object, so each thread keeps
its own clients (redis-py clients are thread-safe in any case)."""

from typing import Any

from django.core.cache.backends import redis


class RedisCacheClient(redis.RedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        django: Any = self  # the private helpers below are Django's, untyped in its stubs
        index = django._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            client = django._client(connection_pool=django._get_connection_pool(write))
            self._clients[index] = client
        return client


class RedisCache(redis.RedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = RedisCacheClient
