"""`TokenCache` over the real Redis and the memory store, with a real GPT-2 tokenizer."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis

from genesis.cache import (
    CircuitBreaker,
    MemoryTokenStore,
    RedisTokenStore,
    SqliteTokenStore,
    TokenCache,
    TokenStore,
)
from genesis.cache._keys import HashMemo, content_hash
from genesis.errors import CacheError
from genesis.tokens import HFTokenizer, TokenIds, pack_ids, unpack_ids


class CountingTokenizer:
    """A real HFTokenizer that counts how often each text is encoded."""

    def __init__(self, inner: HFTokenizer) -> None:
        self.inner = inner
        self.encoded: Counter[str] = Counter()
        self.calls = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    @property
    def vocab_size(self) -> int:
        return self.inner.vocab_size

    async def encode_batch(self, texts: Sequence[str]) -> list[TokenIds]:
        self.calls += 1
        self.encoded.update(texts)
        await asyncio.sleep(0)  # let concurrent requests interleave, as a remote tokenizer would
        return await self.inner.encode_batch(texts)

    async def decode(self, ids: Sequence[int] | TokenIds) -> str:
        return await self.inner.decode(ids)


class CountingStore:
    """Wraps a store and counts its round trips."""

    def __init__(self, inner: TokenStore) -> None:
        self.inner = inner
        self.mgets = 0
        self.msets = 0

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        self.mgets += 1
        return await self.inner.mget(keys)

    async def mset(self, items: Mapping[str, bytes], ttl_s: float | None) -> None:
        self.msets += 1
        await self.inner.mset(items, ttl_s)

    async def delete_prefix(self, prefix: str) -> int:
        return await self.inner.delete_prefix(prefix)

    async def ttl(self, key: str) -> float | None:
        return await self.inner.ttl(key)

    async def check_memory_policy(self) -> dict[str, Any]:
        return await self.inner.check_memory_policy()

    async def ping(self) -> None:
        await self.inner.ping()

    async def aclose(self) -> None:
        await self.inner.aclose()


class BrokenStore(CountingStore):
    """Every operation fails (``error``) or hangs past any timeout (``slow``)."""

    def __init__(self, mode: str) -> None:
        super().__init__(MemoryTokenStore())
        self.mode = mode

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        self.mgets += 1
        await self._fail()
        return []

    async def mset(self, items: Mapping[str, bytes], ttl_s: float | None) -> None:
        self.msets += 1
        await self._fail()

    async def _fail(self) -> None:
        if self.mode == "slow":
            await asyncio.sleep(10)
        raise CacheError("store is down")


@pytest.fixture(scope="module")
def gpt2(tokenizers_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizers_dir / "gpt2")


@pytest.fixture(scope="module")
def texts(gpt2: HFTokenizer, corpora_dir: Path) -> list[str]:
    """Eight real documentation chunks of ~500 GPT-2 tokens each."""
    files = sorted((corpora_dir / "docs").rglob("*.md"))[:8]
    ids = gpt2.encode_batch_sync([f.read_text(encoding="utf-8") for f in files])
    return [gpt2.decode_sync(i[:500]) for i in ids]


@pytest.fixture
def tok(gpt2: HFTokenizer) -> CountingTokenizer:
    return CountingTokenizer(gpt2)


@pytest.fixture
async def redis_store(
    redis_client: aioredis.Redis, redis_prefix: str
) -> AsyncIterator[CountingStore]:
    store = CountingStore(RedisTokenStore(redis_client))
    yield store
    await store.delete_prefix(redis_prefix + ":")


def _cache(tok: CountingTokenizer, store: TokenStore | None, prefix: str, **kw: Any) -> TokenCache:
    kw.setdefault("op_timeout_s", 1.0)  # the shared 2-core machine is noisy; outages are faked
    return TokenCache(tok, store, prefix=prefix, **kw)


def _fresh(gpt2: HFTokenizer, texts: Sequence[str]) -> list[list[int]]:
    return [ids.tolist() for ids in gpt2.encode_batch_sync(texts)]


def _as_lists(ids: Sequence[TokenIds]) -> list[list[int]]:
    return [i.tolist() for i in ids]


@pytest.mark.integration
async def test_miss_then_l1_hit_then_l2_hit_with_a_fresh_l1(
    tok: CountingTokenizer,
    gpt2: HFTokenizer,
    texts: list[str],
    redis_store: CountingStore,
    redis_prefix: str,
) -> None:
    cache = _cache(tok, redis_store, redis_prefix)
    first = await cache.get_many("docs", texts[:5])
    assert first.tiers == ["miss"] * 5 and first.cached_tokens == 0
    await cache.flush()
    second = await cache.get_many("docs", texts[:5])
    assert second.tiers == ["l1"] * 5 and second.round_trips == 0
    assert second.cached_tokens == sum(len(i) for i in second.ids)

    cold = _cache(tok, redis_store, redis_prefix)
    third = await cold.get_many("docs", texts[:5])
    assert third.tiers == ["l2"] * 5 and third.round_trips == 1
    expected = _fresh(gpt2, texts[:5])
    for lookup in (first, second, third):
        assert _as_lists(lookup.ids) == expected
    assert tok.encoded == Counter(texts[:5])
    assert cold.stats().l2_hits == 5 and cache.stats().l1_hits == 5


@pytest.mark.integration
async def test_every_request_costs_at_most_one_round_trip(
    tok: CountingTokenizer, texts: list[str], redis_store: CountingStore, redis_prefix: str
) -> None:
    writer = _cache(tok, redis_store, redis_prefix)
    await writer.warm("docs", texts[:3])
    cache = _cache(tok, redis_store, redis_prefix)
    await cache.get_many("docs", texts[:1])  # L1 now holds text 0
    redis_store.mgets = 0
    lookup = await cache.get_many("docs", texts[:6])  # 1 in L1, 2 in Redis, 3 misses
    assert lookup.tiers == ["l1", "l2", "l2", "miss", "miss", "miss"]
    assert lookup.round_trips == 1 and redis_store.mgets == 1
    assert tok.calls == 2, "the three misses were tokenized in one batch"
    await cache.flush()
    assert redis_store.msets == 2, "warm wrote once, this request once"


@pytest.mark.integration
async def test_redis_ttl_is_set_and_expiry_makes_a_miss(
    tok: CountingTokenizer, texts: list[str], redis_store: CountingStore, redis_prefix: str
) -> None:
    cache = _cache(tok, redis_store, redis_prefix, ttl_s=0.3)
    await cache.warm("docs", texts[:2])
    [key, _] = cache.keys("docs", texts[:2])
    remaining = await redis_store.ttl(key)
    assert remaining is not None and 0 < remaining <= 0.3
    await asyncio.sleep(0.45)
    assert await redis_store.ttl(key) is None
    cold = _cache(tok, redis_store, redis_prefix)
    assert (await cold.get_many("docs", texts[:2])).tiers == ["miss", "miss"]


@pytest.mark.integration
async def test_a_per_call_ttl_overrides_the_cache_ttl_of_the_write_back(
    tok: CountingTokenizer, texts: list[str], redis_store: CountingStore, redis_prefix: str
) -> None:
    cache = _cache(tok, redis_store, redis_prefix, ttl_s=3600)
    await cache.get_many("docs", texts[:2], ttl_s=30)
    await cache.warm("docs", texts[2:4], ttl_s=120)
    await cache.get_many("docs", texts[4:5])
    await cache.flush()
    ttls = [await redis_store.ttl(key) for key in cache.keys("docs", texts[:5])]
    assert all(t is not None and 25 < t <= 30 for t in ttls[:2]), ttls
    assert all(t is not None and 115 < t <= 120 for t in ttls[2:4]), ttls
    assert ttls[4] is not None and 3595 < ttls[4] <= 3600


async def test_a_per_call_ttl_expires_entries_in_the_memory_store(
    tok: CountingTokenizer, texts: list[str]
) -> None:
    now = [0.0]
    store = MemoryTokenStore(clock=lambda: now[0])
    cache = _cache(tok, store, "gt", ttl_s=100)
    await cache.warm("docs", texts[:1], ttl_s=1)
    await cache.warm("docs", texts[1:2])
    now[0] = 1.0
    lookup = await _cache(tok, store, "gt").get_many("docs", texts[:2])
    assert lookup.tiers == ["miss", "l2"]


async def test_sqlite_store_keeps_token_ids_across_processes(
    tok: CountingTokenizer, gpt2: HFTokenizer, texts: list[str], tmp_path: Path
) -> None:
    async with _cache(tok, SqliteTokenStore(tmp_path / "t.db"), "gt") as cache:
        await cache.warm("docs", texts[:3])
    async with _cache(tok, SqliteTokenStore(tmp_path / "t.db"), "gt") as reopened:
        lookup = await reopened.get_many("docs", texts[:3])
    assert lookup.tiers == ["l2"] * 3 and lookup.round_trips == 1
    assert _as_lists(lookup.ids) == _fresh(gpt2, texts[:3])
    assert tok.encoded == Counter(texts[:3])


def test_keys_from_the_hash_memo_are_the_content_addressed_keys(
    tok: CountingTokenizer, texts: list[str]
) -> None:
    cache = _cache(tok, None, "gt")
    expected = cache.keys("docs", texts[:3], [content_hash(t) for t in texts[:3]])
    assert cache.keys("docs", texts[:3]) == expected
    copies = ["".join(list(t)) for t in texts[:3]]  # equal text, other objects
    assert cache.keys("docs", copies) == expected
    assert cache.keys("docs", [texts[0] + " "]) != expected[:1]
    off = _cache(tok, None, "gt", hash_memo_chars=0)
    assert off.keys("docs", texts[:3]) == expected


def test_the_hash_memo_is_bounded_by_characters() -> None:
    memo = HashMemo(max_chars=10)
    assert memo.hash("aaaa") == content_hash("aaaa")[:32]
    memo.hash("bbbb")
    memo.hash("cccc")  # 12 chars > 10: "aaaa" goes
    assert len(memo) == 2
    memo.hash("x" * 11)  # longer than the bound: hashed, never held
    assert len(memo) == 2
    with pytest.raises(ValueError, match="max_chars"):
        HashMemo(max_chars=-1)


async def test_memory_store_ttl_expiry_makes_a_miss(
    tok: CountingTokenizer, texts: list[str]
) -> None:
    now = [0.0]
    store = MemoryTokenStore(clock=lambda: now[0])
    cache = _cache(tok, store, "gt", ttl_s=1)
    await cache.warm("docs", texts[:2])
    now[0] = 0.9
    assert (await _cache(tok, store, "gt").get_many("docs", texts[:2])).tiers == ["l2", "l2"]
    now[0] = 1.0
    assert (await _cache(tok, store, "gt").get_many("docs", texts[:2])).tiers == ["miss", "miss"]


@pytest.mark.integration
async def test_invalidating_a_collection_leaves_the_others(
    tok: CountingTokenizer, texts: list[str], redis_store: CountingStore, redis_prefix: str
) -> None:
    cache = _cache(tok, redis_store, redis_prefix)
    await cache.warm("docs", texts[:3])
    await cache.warm("support", texts[:3])
    assert await cache.invalidate("docs") == 3
    assert (await cache.get_many("docs", texts[:3])).tiers == ["miss"] * 3
    assert (await cache.get_many("support", texts[:3])).tiers == ["l1"] * 3
    cold = _cache(tok, redis_store, redis_prefix)
    assert (await cold.get_many("support", texts[:3])).tiers == ["l2"] * 3


@pytest.mark.integration
async def test_bad_values_in_redis_are_never_served_and_are_rebuilt(
    tok: CountingTokenizer,
    gpt2: HFTokenizer,
    texts: list[str],
    redis_client: aioredis.Redis,
    redis_store: CountingStore,
    redis_prefix: str,
) -> None:
    cache = _cache(tok, redis_store, redis_prefix)
    keys = cache.keys("docs", texts[:4])
    good = [
        pack_ids(i, key=key, vocab_size=gpt2.vocab_size)
        for key, i in zip(keys, gpt2.encode_batch_sync(texts[:3]), strict=False)
    ]
    corrupted = good[0][:-2] + bytes([good[0][-2] ^ 0xFF, good[0][-1]])
    truncated = good[1][:-7]
    foreign_key = keys[2].replace(gpt2.fingerprint, "hf-another-tokenizer")
    foreign = pack_ids(
        np.asarray(gpt2.encode_batch_sync(texts[2:3])[0]) % 1000,
        key=foreign_key,
        vocab_size=gpt2.vocab_size,
    )
    for key, value in zip(keys, [corrupted, truncated, foreign], strict=False):
        await redis_client.set(key, value)

    lookup = await cache.get_many("docs", texts[:4])
    assert lookup.tiers == ["miss"] * 4
    assert _as_lists(lookup.ids) == _fresh(gpt2, texts[:4])
    assert cache.stats().corrupt == 3
    await cache.flush()
    for key, ids in zip(keys, lookup.ids, strict=True):
        stored = await redis_client.get(key)
        assert stored is not None
        out = unpack_ids(stored, key=key, vocab_size=gpt2.vocab_size)
        assert out.tolist() == ids.tolist()


@pytest.mark.integration
async def test_values_rotated_among_keys_are_refused_counted_and_rewritten(
    tok: CountingTokenizer,
    gpt2: HFTokenizer,
    texts: list[str],
    redis_client: aioredis.Redis,
    redis_store: CountingStore,
    redis_prefix: str,
) -> None:
    """Valid values of one collection, each moved under its neighbour's key (issue 7 item 4)."""
    writer = _cache(tok, redis_store, redis_prefix)
    before = await writer.get_many("docs", texts)
    await writer.flush()
    keys = writer.keys("docs", texts)
    values = [await redis_client.get(key) for key in keys]
    assert all(v is not None for v in values)
    for key, value in zip(keys, values[1:] + values[:1], strict=True):
        await redis_client.set(key, value)  # every key now holds another chunk's valid value

    fresh = _cache(tok, redis_store, redis_prefix)  # a new process: empty L1, same Redis
    after = await fresh.get_many("docs", texts)
    assert _as_lists(after.ids) == _as_lists(before.ids) == _fresh(gpt2, texts)
    assert after.tiers == ["miss"] * len(texts)
    assert fresh.stats().corrupt == len(texts)
    await fresh.flush()
    for key, ids in zip(keys, before.ids, strict=True):
        stored = await redis_client.get(key)
        assert stored is not None
        assert unpack_ids(stored, key=key, vocab_size=gpt2.vocab_size).tolist() == ids.tolist()
    healed = await _cache(tok, redis_store, redis_prefix).get_many("docs", texts)
    assert healed.tiers == ["l2"] * len(texts)


@pytest.mark.integration
async def test_concurrent_misses_of_one_chunk_tokenize_it_once(
    tok: CountingTokenizer,
    gpt2: HFTokenizer,
    texts: list[str],
    redis_store: CountingStore,
    redis_prefix: str,
) -> None:
    cache = _cache(tok, redis_store, redis_prefix)
    # Every request also carries a chunk of its own, so the batches differ.
    requests = [[texts[0], f"{texts[1]} request {n}"] for n in range(100)]
    lookups = await asyncio.gather(*(cache.get_many("docs", r) for r in requests))
    assert tok.encoded[texts[0]] == 1
    assert all(lk.ids[0].tolist() == _fresh(gpt2, texts[:1])[0] for lk in lookups)
    assert sum(lk.round_trips for lk in lookups) == redis_store.mgets <= 100
    stats = cache.stats()  # the others waited on the in-flight encode or found its write-back
    assert stats.coalesced + stats.l2_hits == 99
    await cache.flush()


async def test_concurrent_misses_wait_on_the_in_flight_encode(
    tok: CountingTokenizer, gpt2: HFTokenizer, texts: list[str]
) -> None:
    cache = _cache(tok, None, "gt")
    lookups = await asyncio.gather(*(cache.get_many("docs", texts[:2]) for _ in range(100)))
    assert tok.calls == 1 and tok.encoded == Counter(texts[:2])
    assert cache.stats().coalesced == 2 * 99
    assert all(_as_lists(lk.ids) == _fresh(gpt2, texts[:2]) for lk in lookups)


async def test_a_cancelled_owner_does_not_fail_its_waiters(
    gpt2: HFTokenizer, texts: list[str]
) -> None:
    gate = asyncio.Event()

    class GatedTokenizer(CountingTokenizer):
        async def encode_batch(self, batch: Sequence[str]) -> list[TokenIds]:
            if self.calls == 0:
                self.calls += 1
                await gate.wait()  # the first encode hangs until cancelled
            return await super().encode_batch(batch)

    cache = _cache(GatedTokenizer(gpt2), None, "gt")
    owner = asyncio.create_task(cache.get_many("docs", texts[:1]))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(cache.get_many("docs", texts[:1]))
    await asyncio.sleep(0)
    owner.cancel()
    lookup = await waiter
    assert _as_lists(lookup.ids) == _fresh(gpt2, texts[:1])
    with pytest.raises(asyncio.CancelledError):
        await owner


async def test_duplicate_texts_in_one_request_are_tokenized_once(
    tok: CountingTokenizer, texts: list[str]
) -> None:
    cache = _cache(tok, None, "gt")
    lookup = await cache.get_many("docs", [texts[0], texts[1], texts[0]])
    assert tok.encoded == Counter(texts[:2])
    assert lookup.ids[0] is lookup.ids[2] and lookup.round_trips == 0


@pytest.mark.parametrize("mode", ["error", "slow"])
async def test_a_failing_store_never_fails_a_request_and_opens_the_breaker(
    mode: str, tok: CountingTokenizer, gpt2: HFTokenizer, texts: list[str]
) -> None:
    store = BrokenStore(mode)
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=60)
    cache = TokenCache(tok, store, breaker=breaker, op_timeout_s=0.02, l1_max_bytes=0)
    for _ in range(3):
        lookup = await cache.get_many("docs", texts[:3])
        assert _as_lists(lookup.ids) == _fresh(gpt2, texts[:3])
        assert lookup.tiers == ["miss"] * 3
        await cache.flush()
    assert breaker.state == "open" and cache.stats().breaker_state == "open"
    calls = store.mgets + store.msets
    for _ in range(3):
        lookup = await cache.get_many("docs", texts[:3])
        assert lookup.round_trips == 0 and _as_lists(lookup.ids) == _fresh(gpt2, texts[:3])
    await cache.flush()
    stats = cache.stats()
    assert store.mgets + store.msets == calls, "no L2 call while the breaker is open"
    assert stats.errors == calls == 2 and stats.skipped == 2 * 5
    assert stats.timeouts == (2 if mode == "slow" else 0)


async def test_an_l1_only_cache_hits_without_a_store(
    tok: CountingTokenizer, texts: list[str]
) -> None:
    async with _cache(tok, None, "gt") as cache:
        assert (await cache.get_many("docs", texts[:2])).tiers == ["miss", "miss"]
        assert (await cache.get_many("docs", texts[:2])).tiers == ["l1", "l1"]
        assert await cache.warm("docs", texts[:3]) == 1
        assert await cache.invalidate("docs") == 3
        assert (await cache.check_memory_policy())["ok"]


async def test_stats_count_tiers_and_l1_bytes(tok: CountingTokenizer, texts: list[str]) -> None:
    cache = _cache(tok, MemoryTokenStore(), "gt")
    await cache.get_many("docs", texts[:2])
    lookup = await cache.get_many("docs", texts[:2])
    stats = cache.stats().as_dict()
    assert stats["misses"] == 2 and stats["l1_hits"] == 2 and stats["l1_entries"] == 2
    assert stats["l1_bytes"] >= sum(i.nbytes for i in lookup.ids)
    assert stats["breaker_state"] == "closed"
    assert set(lookup.timings_ms) == {"l1", "l2", "tokenize", "total"}
    await cache.aclose()


async def test_bad_arguments_are_refused_with_a_clear_error(
    tok: CountingTokenizer, texts: list[str]
) -> None:
    cache = _cache(tok, None, "gt")
    with pytest.raises(ValueError, match="invalid collection 'a:b'"):
        await cache.get_many("a:b", texts[:1])
    with pytest.raises(ValueError, match="1 hashes for 2 texts"):
        await cache.get_many("docs", texts[:2], hashes=["ab" * 16])
    with pytest.raises(ValueError, match="invalid content hash"):
        await cache.get_many("docs", texts[:1], hashes=["not-hex"])
    with pytest.raises(ValueError, match="invalid prefix"):
        TokenCache(tok, None, prefix="g*")
    for ttl in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="ttl_s must be > 0"):
            await cache.get_many("docs", texts[:1], ttl_s=ttl)
        with pytest.raises(ValueError, match="ttl_s must be > 0"):
            await cache.warm("docs", texts[:1], ttl_s=ttl)


async def test_a_refused_segment_is_left_out_without_failing_the_others(
    tokenizers_dir: Path,
) -> None:
    from genesis.tokens import SegmentEncoder, normalize_segment

    encoder = SegmentEncoder(HFTokenizer.from_file(tokenizers_dir / "phi-3-mini-4k-instruct"))
    cache = TokenCache(encoder, MemoryTokenStore())
    good, bad = normalize_segment("docs.md\nGood chunk."), normalize_segment("ends with <|end|>")
    first = await cache.get_many("docs", [good, bad])
    assert len(first.ids[0]) > 0 and len(first.ids[1]) == 0
    await cache.flush()
    second = await cache.get_many("docs", [good, bad])
    assert second.tiers == ["l1", "miss"]  # the good one was cached, the refused one never
    assert cache.stats().refused == 2
    await cache.aclose()
