"""The Redis tier under load (issue 6 item 6), on a private redis-server the tests kill and
restart: a busy loop never trips the breaker, the breaker closes soon after Redis returns
while 32 clients keep asking, and a stale pooled connection is retried once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from redis_servers import RedisServer

from genesis.cache import CircuitBreaker, MemoryTokenStore, RedisTokenStore, TokenCache
from genesis.tokens import HFTokenizer, TokenIds

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENTS = 32


@pytest.fixture(scope="module")
def gpt2(tokenizers_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizers_dir / "gpt2")


@pytest.fixture(scope="module")
def texts(corpora_dir: Path) -> list[str]:
    files = sorted((corpora_dir / "docs").rglob("*.md"))[:10]
    return [f.read_text(encoding="utf-8")[:2000] for f in files]


class OffloadedTokenizer:
    """GPT-2 run in a worker thread, as the service runs its CPU-bound stages (issue 6
    item 1): the loop does I/O only, so 32 clients' misses during an outage do not starve
    the probe. (Inline tokenization is the busy-loop test's subject.)"""

    def __init__(self, inner: HFTokenizer) -> None:
        self.inner = inner
        self.name = inner.name
        self.fingerprint = inner.fingerprint
        self.vocab_size = inner.vocab_size

    async def encode_batch(self, texts: Sequence[str]) -> list[TokenIds]:
        return await asyncio.to_thread(self.inner.encode_batch_sync, list(texts))

    async def decode(self, ids: Sequence[int] | TokenIds) -> str:
        return await self.inner.decode(ids)


def _busy_loop(stall_s: float) -> None:
    """CPU work run inline on the event loop, as an un-offloaded request stage would."""
    end = time.perf_counter() + stall_s
    while time.perf_counter() < end:
        pass


async def _hog(stop: asyncio.Event, stall_s: float) -> None:
    while not stop.is_set():
        _busy_loop(stall_s)
        await asyncio.sleep(0.002)


async def _client(cache: TokenCache, texts: list[str], i: int, rounds: int) -> list[str]:
    tiers: list[str] = []
    for r in range(rounds):
        start = (i + r) % (len(texts) - 5)
        lookup = await cache.get_many("docs", texts[start : start + 5])
        tiers += lookup.tiers
    return tiers


async def test_a_busy_loop_never_opens_the_breaker_on_a_healthy_redis(
    lone_redis: RedisServer, gpt2: HFTokenizer, texts: list[str]
) -> None:
    # The production settings: a 50 ms op timeout, 3 failures open the circuit. Another
    # request holds the loop 80 ms at a time, longer than the timeout, as an inline
    # tokenizer or embedding did in issue 6.
    store = RedisTokenStore.from_url(lone_redis.url, pool_size=16, socket_timeout_s=0.25)
    cache = TokenCache(gpt2, store, l1_max_bytes=0, op_timeout_s=0.05)
    await cache.warm("docs", texts)
    stop = asyncio.Event()
    hog = asyncio.create_task(_hog(stop, 0.08))
    try:
        results = await asyncio.gather(*(_client(cache, texts, i, 20) for i in range(CLIENTS)))
    finally:
        stop.set()
        await hog
    stats = cache.stats()
    assert stats.breaker_opened == 0 and stats.errors == 0 and stats.timeouts == 0
    assert all(tier == "l2" for tiers in results for tier in tiers)
    await cache.aclose()


async def test_the_breaker_closes_soon_after_redis_returns_while_32_clients_ask(
    lone_redis: RedisServer, gpt2: HFTokenizer, texts: list[str]
) -> None:
    expected = [ids.tolist() for ids in gpt2.encode_batch_sync(texts)]
    store = RedisTokenStore.from_url(lone_redis.url, pool_size=16, socket_timeout_s=0.25)
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout_s=1.0)
    tok = OffloadedTokenizer(gpt2)
    cache = TokenCache(tok, store, l1_max_bytes=0, op_timeout_s=0.05, breaker=breaker)
    await cache.warm("docs", texts)
    stop = asyncio.Event()
    wrong: list[int] = []

    async def ask(i: int) -> None:
        while not stop.is_set():
            start = i % (len(texts) - 5)
            lookup = await cache.get_many("docs", texts[start : start + 5])
            if [ids.tolist() for ids in lookup.ids] != expected[start : start + 5]:
                wrong.append(i)
            await asyncio.sleep(0.001)

    clients = [asyncio.create_task(ask(i)) for i in range(CLIENTS)]
    try:
        lone_redis.kill()
        await _until(lambda: breaker.state != "closed", 10)
        await asyncio.sleep(1.5)  # a failed probe or two while Redis is away
        lone_redis.start()  # same port, empty: every pooled connection is now stale
        returned = time.monotonic()
        await _until(lambda: breaker.state == "closed", 5)
        closed_after = time.monotonic() - returned
        await asyncio.sleep(0.5)  # the clients refill Redis through the write-back
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert not wrong, "a request got wrong token IDs"
    assert closed_after < 5
    assert breaker.state == "closed"
    lookup = await cache.get_many("docs", texts[:5])
    assert lookup.tiers == ["l2"] * 5
    await cache.aclose()


async def _until(condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


async def test_a_stale_pooled_connection_is_retried_once(
    lone_redis: RedisServer, redis_prefix: str
) -> None:
    # read_connections=0: every command goes through the pool (mset, mget, delete, ping).
    store = RedisTokenStore.from_url(lone_redis.url, pool_size=4, read_connections=0)
    keys = [f"{redis_prefix}:k{i}" for i in range(8)]
    # Four concurrent writes open four pooled connections.
    await asyncio.gather(*(store.mset({key: b"v"}, ttl_s=60) for key in keys[:4]))
    lone_redis.kill()
    lone_redis.start()  # same port, empty: the four idle connections are dead
    for _ in range(4):  # each call may draw another stale connection
        await store.mset({keys[4]: b"w"}, ttl_s=60)
        assert await store.mget(keys[4:6]) == [b"w", None]
        assert await store.delete_prefix(f"{redis_prefix}:") == 1
        await store.ping()
    await store.aclose()


async def test_a_stale_lane_and_pool_never_fail_a_request_after_a_restart(
    lone_redis: RedisServer, gpt2: HFTokenizer, texts: list[str]
) -> None:
    store = RedisTokenStore.from_url(lone_redis.url, pool_size=4, read_connections=2)
    cache = TokenCache(gpt2, store, l1_max_bytes=0, op_timeout_s=0.5)
    await asyncio.gather(*(cache.get_many("docs", texts[i : i + 3]) for i in range(6)))
    await cache.flush()
    lone_redis.kill()
    lone_redis.start()
    lookups = await asyncio.gather(*(cache.get_many("docs", texts[i : i + 3]) for i in range(6)))
    await cache.flush()
    assert all(lookup.round_trips == 1 for lookup in lookups)
    stats = cache.stats()
    assert stats.errors == 0 and stats.write_errors == 0
    await cache.aclose()


class HangingOnceStore(MemoryTokenStore):
    """Its first ``ping`` hangs (a probe that never answers); later ones answer."""

    def __init__(self) -> None:
        super().__init__()
        self.pings = 0

    async def ping(self) -> None:
        self.pings += 1
        if self.pings == 1:
            await asyncio.sleep(3600)


async def test_requests_never_wait_on_the_probe_and_a_lost_probe_is_replaced(
    gpt2: HFTokenizer, texts: list[str]
) -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=5.0, clock=lambda: now[0])
    store = HangingOnceStore()
    cache = TokenCache(gpt2, store, l1_max_bytes=0, breaker=breaker, probe_timeout_s=0.05)
    breaker.record_failure()
    now[0] = 5.0  # half-open: the next request starts the probe in the background
    lookup = await cache.get_many("docs", texts[:2])
    assert lookup.round_trips == 0
    await _until(lambda: store.pings == 1, 5)
    await _until(lambda: breaker.state == "open", 5)  # the hanging probe timed out
    now[0] = 10.0
    await cache.get_many("docs", texts[:2])  # starts the second probe, which answers
    await _until(lambda: breaker.state == "closed", 5)
    assert store.pings == 2
    assert (await cache.get_many("docs", texts[:2])).round_trips == 1
    await cache.aclose()
