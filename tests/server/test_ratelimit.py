"""Token-bucket rate limits: in-process with a fake clock, and in the real Redis (unique key
prefix per test), including two limiters (replicas) sharing one bucket and a Redis that fails.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from genesis.config import BucketSettings, RateLimitSettings
from genesis.errors import RateLimitExceededError
from genesis.server._ratelimit import LocalBuckets, RateLimiter, RedisBuckets, retry_after_header

# A rate so slow that no token comes back while a test runs: counts are exact, not timed.
SLOW = BucketSettings(rate_per_s=0.001, burst=3)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _settings(**overrides: object) -> RateLimitSettings:
    base: dict[str, object] = {"query": SLOW, "run": BucketSettings(rate_per_s=0.5, burst=1)}
    return RateLimitSettings.model_validate(base | overrides)


# -- in-process ------------------------------------------------------------------------------


def test_local_bucket_allows_the_burst_then_refuses_with_the_refill_time() -> None:
    clock = FakeClock()
    buckets = LocalBuckets(clock=clock)
    bucket = BucketSettings(rate_per_s=2.0, burst=3)
    assert [buckets.take_now("a", bucket) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take_now("a", bucket) == pytest.approx(0.5)
    clock.now += 0.25
    assert buckets.take_now("a", bucket) == pytest.approx(0.25)  # a refusal takes nothing
    clock.now += 0.25
    assert buckets.take_now("a", bucket) == 0.0
    assert buckets.take_now("a", bucket) == pytest.approx(0.5)


def test_local_bucket_refills_up_to_the_burst_only() -> None:
    clock = FakeClock()
    buckets = LocalBuckets(clock=clock)
    bucket = BucketSettings(rate_per_s=1.0, burst=2)
    buckets.take_now("a", bucket)
    clock.now += 3600
    assert [buckets.take_now("a", bucket) for _ in range(3)][:2] == [0.0, 0.0]
    assert buckets.take_now("a", bucket) > 0


def test_local_buckets_are_independent_and_bounded() -> None:
    clock = FakeClock()
    buckets = LocalBuckets(max_buckets=2, clock=clock)
    one = BucketSettings(rate_per_s=0.001, burst=1)
    assert buckets.take_now("a", one) == 0.0
    assert buckets.take_now("b", one) == 0.0
    assert buckets.take_now("a", one) > 0
    assert buckets.take_now("c", one) == 0.0  # evicts the least recently used: "b"
    assert len(buckets) == 2
    assert buckets.take_now("a", one) > 0  # "a" was used recently: still empty
    assert buckets.take_now("b", one) == 0.0  # "b" came back full


async def test_limiter_raises_with_retry_after_per_scope_and_client() -> None:
    clock = FakeClock()
    limiter = RateLimiter(_settings(), clock=clock)
    assert limiter.store == "local"
    for _ in range(3):
        await limiter.acquire("key:app", "query")
    with pytest.raises(RateLimitExceededError, match="query scope") as info:
        await limiter.acquire("key:app", "query")
    assert info.value.retry_after_s == pytest.approx(1000.0)
    await limiter.acquire("key:ops", "query")  # another client
    await limiter.acquire("key:app", "run")  # another scope
    with pytest.raises(RateLimitExceededError) as info:
        await limiter.acquire("key:app", "run")
    assert info.value.retry_after_s == pytest.approx(2.0)
    clock.now += 2.0
    await limiter.acquire("key:app", "run")


async def test_a_disabled_limiter_lets_everything_through() -> None:
    limiter = RateLimiter(_settings(enabled=False))
    for _ in range(20):
        await limiter.acquire("key:app", "run")


def test_retry_after_header_is_whole_seconds_at_least_one() -> None:
    assert [retry_after_header(s) for s in (0.001, 1.0, 1.2, 59.9)] == ["1", "1", "2", "60"]


# -- Redis -----------------------------------------------------------------------------------


@pytest.mark.integration
async def test_redis_bucket_counts_exactly_and_expires(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    buckets = RedisBuckets(redis_client, prefix=redis_prefix, op_timeout_s=2.0)
    try:
        results = [await buckets.take("query:key:app", SLOW) for _ in range(4)]
        assert results[:3] == [0.0, 0.0, 0.0]
        assert 990 < results[3] <= 1000  # one token at 0.001/s
        assert await buckets.take("query:key:ops", SLOW) == 0.0
        ttl_ms = await redis_client.pttl(f"{redis_prefix}:query:key:app")
        assert 0 < ttl_ms <= 3000 * 1000 + 1000  # burst / rate, plus a second
    finally:
        await _drop(redis_client, redis_prefix)


@pytest.mark.integration
async def test_redis_bucket_is_atomic_under_concurrency(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    buckets = RedisBuckets(redis_client, prefix=redis_prefix, op_timeout_s=5.0)
    bucket = BucketSettings(rate_per_s=0.001, burst=10)
    try:
        results = await asyncio.gather(*(buckets.take("query:x", bucket) for _ in range(40)))
        assert sum(1 for r in results if r == 0.0) == 10
    finally:
        await _drop(redis_client, redis_prefix)


@pytest.mark.integration
async def test_two_replicas_share_one_bucket_in_redis(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    settings = _settings(prefix=redis_prefix, op_timeout_s=2.0)
    first = RateLimiter(settings, redis=redis_client)
    second = RateLimiter(settings, redis=redis_client)
    try:
        await first.acquire("key:app", "query")
        await first.acquire("key:app", "query")
        await second.acquire("key:app", "query")
        for limiter in (first, second):
            with pytest.raises(RateLimitExceededError):
                await limiter.acquire("key:app", "query")
        assert first.store == second.store == "redis"
        assert await redis_client.exists(f"{redis_prefix}:query:key:app") == 1
    finally:
        await _drop(redis_client, redis_prefix)


@pytest.mark.integration
async def test_redis_down_falls_back_in_process_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on 18119 (in the helper's port range): every call fails to connect.
    dead = aioredis.Redis(host="127.0.0.1", port=18119, socket_connect_timeout=0.5)
    clock = FakeClock()
    # redis-py retries a refused connection with backoff; op_timeout_s bounds the whole call.
    limiter = RateLimiter(_settings(op_timeout_s=0.5), redis=dead, clock=clock)
    caplog.set_level(logging.INFO)
    try:
        for _ in range(3):
            await limiter.acquire("key:app", "query")  # requests still served
        with pytest.raises(RateLimitExceededError):
            await limiter.acquire("key:app", "query")  # and still limited, in-process
        assert limiter.store == "local"
        clock.now += 10  # time to try Redis again: it fails again, quietly
        await limiter.acquire("key:ops", "query")
    finally:
        await dead.aclose()
    warnings = [r for r in caplog.records if "rate limits" in r.getMessage()]
    assert [r.levelname for r in warnings] == ["WARNING"]
    assert "Redis failed" in warnings[0].getMessage()


class FlakyStore:
    """A shared store that fails while ``down``; otherwise an in-process one."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self._inner = LocalBuckets()

    async def take(self, key: str, bucket: BucketSettings, cost: float = 1.0) -> float:
        self.calls += 1
        if self.down:
            raise RedisConnectionError("Error 111 connecting to redis://:pw@10.0.0.1:6379")
        return await self._inner.take(key, bucket, cost)


async def test_the_shared_store_is_retried_after_a_pause_and_recovery_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    store = FlakyStore()
    limiter = RateLimiter(_settings(), shared=store, retry_redis_s=5.0, clock=clock)
    caplog.set_level(logging.INFO)
    store.down = True
    await limiter.acquire("key:a", "query")
    await limiter.acquire("key:a", "query")
    assert store.calls == 1  # not asked again while the pause lasts
    store.down = False
    clock.now += 5.0
    await limiter.acquire("key:a", "query")
    assert store.calls == 2 and limiter.store == "redis"
    messages = [r.getMessage() for r in caplog.records]
    assert any("answers again" in m for m in messages)
    assert all("pw" not in m for m in messages)  # the failure's text (with a URL) is not logged


async def _drop(client: aioredis.Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
