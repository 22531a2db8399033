"""The token cache: L1 (in-process, by bytes) in front of an L2 `TokenStore` (Redis or memory).

Typical wiring (once, in a lifespan)::

    store = RedisTokenStore.from_url(url, pool_size=16)   # or MemoryTokenStore(),
                                                           # or SqliteTokenStore(path),
                                                           # or RedisClusterTokenStore.from_url
    cache = TokenCache(tokenizer, store, ttl_s=86_400)
    await cache.check_memory_policy()                      # logs a warning if Redis is unbounded
    lookup = await cache.get_many("docs", texts)           # lookup.ids, lookup.tiers
    await cache.aclose()

``RedisTokenStore`` and ``RedisClusterTokenStore`` are imported on first access: redis-py
costs ~50 ms to import, which the embedded SQLite store (and every CLI start) should not pay.
"""

from typing import TYPE_CHECKING

from genesis._breaker import BreakerState, CircuitBreaker
from genesis._lazy import lazy_exports
from genesis.cache._cache import CacheLookup, CacheStats, TokenCache
from genesis.cache._l1 import L1Cache
from genesis.cache._sqlite import SqliteTokenStore
from genesis.cache._store import MemoryTokenStore, TokenStore

if TYPE_CHECKING:
    from genesis.cache._cluster import RedisClusterTokenStore
    from genesis.cache._redis import RedisTokenStore

__all__ = [
    "BreakerState",
    "CacheLookup",
    "CacheStats",
    "CircuitBreaker",
    "L1Cache",
    "MemoryTokenStore",
    "RedisClusterTokenStore",
    "RedisTokenStore",
    "SqliteTokenStore",
    "TokenCache",
    "TokenStore",
]


__getattr__ = lazy_exports(
    __name__,
    {
        "RedisTokenStore": "genesis.cache._redis",
        "RedisClusterTokenStore": "genesis.cache._cluster",
    },
)
