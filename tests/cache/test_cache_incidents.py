"""Failures of L2 calls that were in flight together are one incident for the breaker."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from genesis.cache import CircuitBreaker, MemoryTokenStore, TokenCache
from genesis.tokens import HFTokenizer


@pytest.fixture(scope="module")
def gpt2(tokenizers_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizers_dir / "gpt2")


class StallingStore(MemoryTokenStore):
    """A store whose reads hang while ``stalled`` is set (a Redis that stops answering)."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = asyncio.Event()

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        if self.stalled.is_set():
            await asyncio.sleep(3600)
        return await super().mget(keys)

    async def mset(self, items: Mapping[str, bytes], ttl_s: float | None) -> None:
        if self.stalled.is_set():
            await asyncio.sleep(3600)
        await super().mset(items, ttl_s)


async def test_requests_in_flight_through_one_stall_count_once(gpt2: HFTokenizer) -> None:
    store = StallingStore()
    breaker = CircuitBreaker(3, 60.0, name="test-l2")
    cache = TokenCache(gpt2, store, op_timeout_s=0.02, breaker=breaker, l1_max_bytes=0)
    store.stalled.set()
    # 32 requests in flight when Redis stalls: every one times out, one incident.
    await asyncio.gather(*(cache.get_many("c", [f"text {i}"]) for i in range(32)))
    stats = cache.stats()
    assert stats.timeouts == 32
    assert breaker.state == "closed"
    # A Redis that stays stalled: each new call fails after the one before, and opens it.
    for i in range(2):
        await cache.get_many("c", [f"later {i}"])
    assert breaker.state == "open"
    await cache.aclose()


async def test_a_success_between_incidents_keeps_it_closed(gpt2: HFTokenizer) -> None:
    store = StallingStore()
    breaker = CircuitBreaker(3, 60.0, name="test-l2")
    cache = TokenCache(gpt2, store, op_timeout_s=0.02, breaker=breaker, l1_max_bytes=0)
    for _ in range(3):
        store.stalled.set()
        await asyncio.gather(*(cache.get_many("c", [f"x {i}"]) for i in range(8)))
        await cache.flush()  # the write-backs time out too, after the reads
        store.stalled.clear()
        await cache.get_many("c", ["fine"])
    assert breaker.state == "closed"
    await cache.aclose()
