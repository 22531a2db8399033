"""Both `TokenStore`s pass the same contract; then what is specific to each."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from genesis.cache import MemoryTokenStore, RedisTokenStore, TokenStore
from genesis.cache._redis import memory_policy_report
from genesis.errors import CacheError
from genesis.testing.token_store_contract import TokenStoreContract


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestMemoryTokenStore(TokenStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryTokenStore]:
        store = MemoryTokenStore(clock=FakeClock())
        yield store
        await store.aclose()

    async def advance(self, store: TokenStore, seconds: float) -> None:
        assert isinstance(store, MemoryTokenStore)
        clock = store._clock
        assert isinstance(clock, FakeClock)
        clock.now += seconds


@pytest.mark.integration
class TestRedisTokenStore(TokenStoreContract):
    @pytest.fixture
    async def store(self, redis_client: aioredis.Redis) -> AsyncIterator[RedisTokenStore]:
        store = RedisTokenStore(redis_client)
        yield store
        await store.aclose()


async def test_memory_store_is_bounded_by_bytes_and_evicts_lru() -> None:
    store = MemoryTokenStore(max_bytes=300)
    await store.mset({"a": b"x" * 100, "b": b"x" * 100, "c": b"x" * 100}, ttl_s=None)
    await store.mget(["a"])  # "a" is now the most recently used
    await store.mset({"d": b"x" * 100}, ttl_s=None)
    assert await store.mget(["a", "b", "c", "d"]) == [b"x" * 100, None, b"x" * 100, b"x" * 100]
    assert store.evictions == 1


async def test_memory_store_refuses_a_negative_bound() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryTokenStore(max_bytes=-1)


@pytest.mark.integration
async def test_redis_store_refuses_a_decoding_client() -> None:
    client = aioredis.Redis(decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisTokenStore(client)
    await client.aclose()


@pytest.mark.integration
async def test_redis_store_from_url_owns_and_closes_its_pool(redis_prefix: str) -> None:
    store = RedisTokenStore.from_url("redis://127.0.0.1:6379/0", pool_size=2)
    await store.mset({f"{redis_prefix}:k": b"v"}, ttl_s=5)
    assert await store.mget([f"{redis_prefix}:k"]) == [b"v"]
    assert await store.delete_prefix(redis_prefix) == 1
    await store.aclose()


@pytest.mark.integration
async def test_redis_errors_become_cache_errors() -> None:
    store = RedisTokenStore.from_url("redis://127.0.0.1:1/0", socket_timeout_s=0.2)
    with pytest.raises(CacheError, match="MGET"):
        await store.mget(["k"])
    with pytest.raises(CacheError, match="write"):
        await store.mset({"k": b"v"}, ttl_s=1)
    with pytest.raises(CacheError, match="delete"):
        await store.delete_prefix("k")
    await store.aclose()


@pytest.mark.integration
async def test_redis_memory_policy_is_reported_never_changed(
    redis_client: aioredis.Redis,
) -> None:
    before = await redis_client.config_get("maxmemory*")
    report = await RedisTokenStore(redis_client).check_memory_policy()
    assert report["backend"] == "redis"
    assert report["maxmemory_policy"] == before["maxmemory-policy"]
    assert report["maxmemory"] == int(before["maxmemory"])
    assert await redis_client.config_get("maxmemory*") == before


def test_memory_policy_report_warns_unless_bounded_with_lru() -> None:
    unbounded = memory_policy_report({"maxmemory": 0, "maxmemory_policy": "noeviction"})
    assert not unbounded["ok"]
    assert "maxmemory is not set" in unbounded["warning"]
    assert "noeviction" in unbounded["warning"]
    good = memory_policy_report({"maxmemory": 1 << 30, "maxmemory_policy": "allkeys-lru"})
    assert good["ok"] and good["warning"] is None
