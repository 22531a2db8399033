"""`TokenCache`: L1 (in-process) -> L2 (`TokenStore`) -> tokenizer, one batch per request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeVar

import numpy as np

from genesis._breaker import BreakerState, CircuitBreaker
from genesis.cache._deadline import within
from genesis.cache._keys import HashMemo, check_hash, collection_prefix, make_key
from genesis.cache._l1 import L1Cache
from genesis.cache._store import TokenStore
from genesis.errors import CorruptEntryError, SegmentBoundaryError, TokenizerError
from genesis.observability import record_redis_latency
from genesis.tokens import TokenIds, Tokenizer, as_token_ids
from genesis.tokens._codec import id_width, pack_ids, unpack_many

logger = logging.getLogger(__name__)

T = TypeVar("T")
Tier = Literal["l1", "l2", "miss"]
_WARM_BATCH = 256
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^@/\s]*@")
_REASON_CHARS = 200


@dataclass(slots=True)
class CacheLookup:
    """The result of one :meth:`TokenCache.get_many`.

    ``ids[i]`` and ``tiers[i]`` belong to ``texts[i]``; ``ids[i]`` is empty when the segment
    encoder refused ``texts[i]`` (see ``SegmentBoundaryError``): callers leave that text out;
    ``cached_tokens`` counts tokens served from L1/L2; ``round_trips`` is the number of L2
    calls made (0 or 1); ``timings_ms`` has ``l1``, ``l2``, ``tokenize`` and ``total``.
    """

    ids: list[TokenIds]
    tiers: list[Tier]
    cached_tokens: int
    round_trips: int
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot of the cache's counters (per text for hits/misses)."""

    l1_hits: int
    l2_hits: int
    misses: int
    coalesced: int  # misses served by another request's in-flight tokenization
    corrupt: int  # L2 values that failed to decode (dropped, rebuilt)
    errors: int  # failed L2 operations (errors and timeouts)
    timeouts: int  # of which slower than op_timeout_s
    skipped: int  # L2 operations not attempted because the breaker was open
    writes: int  # entries written back to L2
    write_errors: int
    refused: int  # texts the segment encoder refused (their chunks are left out)
    evictions: int  # L1 evictions
    l1_bytes: int
    l1_entries: int
    l1_max_bytes: int
    breaker_state: BreakerState
    breaker_opened: int  # times the breaker opened

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Counters:
    l1_hits: int = 0
    l2_hits: int = 0
    misses: int = 0
    coalesced: int = 0
    corrupt: int = 0
    errors: int = 0
    timeouts: int = 0
    skipped: int = 0
    writes: int = 0
    write_errors: int = 0
    refused: int = 0


class TokenCache:
    """Token IDs of texts, cached in L1 and an optional L2 `TokenStore`, keyed by content.

    Keys are ``{prefix}:{collection}:{tokenizer fingerprint}:{content hash}``, so a changed
    text or tokenizer is never served stale IDs. The cache is an optimisation, never a
    dependency: any L2 error or an L2 call slower than ``op_timeout_s`` (of a responsive
    loop) counts as a failure for ``breaker``; while it is open L2 is skipped and texts are
    tokenized locally; when it half-opens, a background ``ping`` (``probe_timeout_s``)
    probes the store and closes it. Apart from
    bad arguments (``ValueError``) and tokenizer failures, nothing raises to the caller.

    The cache owns ``store`` (``aclose`` closes it). ``store=None`` runs with L1 only.
    Content hashes of texts seen recently are memoised (``hash_memo_chars`` characters of
    text at most; 0 turns it off).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        store: TokenStore | None,
        *,
        l1_max_bytes: int = 64 * 1024 * 1024,
        ttl_s: float | None = 86_400,
        breaker: CircuitBreaker | None = None,
        op_timeout_s: float = 0.05,
        prefix: str = "gt",
        clock: Callable[[], float] = time.monotonic,
        hash_memo_chars: int = 8 * 1024 * 1024,
        probe_timeout_s: float = 1.0,
    ) -> None:
        if op_timeout_s <= 0 or (ttl_s is not None and ttl_s <= 0):
            raise ValueError("op_timeout_s and ttl_s must be > 0 (ttl_s may be None)")
        self._hashes = HashMemo(hash_memo_chars)
        collection_prefix(prefix, "x")  # validates the prefix
        self._tokenizer = tokenizer
        self._store = store
        # Only a Redis store's operations feed genesis_redis_operation_duration_seconds.
        self._remote = "Redis" in type(store).__name__
        self._l1 = L1Cache(l1_max_bytes)
        self._ttl_s = ttl_s
        self._breaker = breaker or CircuitBreaker(clock=clock, name="token-cache-l2")
        self._op_timeout_s = op_timeout_s
        self._prefix = prefix
        self._fingerprint = tokenizer.fingerprint
        self._vocab_size = tokenizer.vocab_size
        self._dtype = np.uint16 if id_width(self._vocab_size) == 2 else np.uint32
        self._inflight: dict[str, asyncio.Future[TokenIds]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._probe: asyncio.Task[None] | None = None
        self._probe_timeout_s = probe_timeout_s
        self._n = _Counters()
        # When the last failure that counted against the breaker was seen: calls already in
        # flight then fail through the same incident and do not count again (see _failed).
        self._incident_at = -math.inf

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def keys(
        self, collection: str, texts: Sequence[str], hashes: Sequence[str] | None = None
    ) -> list[str]:
        """The cache key of each text (``hashes``, when given, must be ``content_hash(text)``)."""
        if hashes is None:
            digest = self._hashes.hash
            hashes = [digest(text) for text in texts]
        elif len(hashes) != len(texts):
            raise ValueError(f"got {len(hashes)} hashes for {len(texts)} texts")
        else:
            hashes = [check_hash(h) for h in hashes]
        base = collection_prefix(self._prefix, collection)
        fingerprint = self._fingerprint
        return [make_key(base, fingerprint, h) for h in hashes]

    async def get_many(
        self,
        collection: str,
        texts: Sequence[str],
        hashes: Sequence[str] | None = None,
        *,
        ttl_s: float | None = None,
    ) -> CacheLookup:
        """Token IDs of every text, in order: L1, then ONE L2 ``mget`` for the rest, then ONE
        ``encode_batch`` for the misses (single-flight per key); misses are written back to
        L2 in the background (see :meth:`flush`) with an expiry of ``ttl_s`` seconds (the
        cache's ``ttl_s`` when None). A text tokenized for another request in flight is
        written back with that request's TTL."""
        _check_ttl(ttl_s)
        t0 = time.perf_counter()
        keys = self.keys(collection, texts, hashes)
        ids: list[TokenIds | None] = [None] * len(keys)
        tiers: list[Tier] = ["miss"] * len(keys)
        todo = self._from_l1(keys, ids, tiers)
        t1 = time.perf_counter()
        round_trips = 0
        if todo:
            found, round_trips = await self._from_l2(list(todo))
            _fill(todo, found, ids, tiers, "l2")
        t2 = time.perf_counter()
        if todo:
            ttl = self._ttl_s if ttl_s is None else ttl_s
            made = await self._tokenize({key: texts[idx[0]] for key, idx in todo.items()}, ttl)
            _fill(todo, made, ids, tiers, "miss")
        t3 = time.perf_counter()
        return self._lookup(ids, tiers, round_trips, (t0, t1, t2, t3))

    def _from_l1(
        self, keys: list[str], ids: list[TokenIds | None], tiers: list[Tier]
    ) -> dict[str, list[int]]:
        """Fill L1 hits in place; return the other keys with their positions."""
        todo: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            hit = self._l1.get(key)
            if hit is None:
                todo.setdefault(key, []).append(i)
            else:
                ids[i] = hit
                tiers[i] = "l1"
        return todo

    async def _from_l2(self, keys: list[str]) -> tuple[dict[str, TokenIds], int]:
        """Decoded L2 hits (also put in L1) and the number of round trips made."""
        if self._store is None:
            return {}, 0
        if not self._l2_allowed():
            return {}, 0
        _, values = await self._guarded(self._store.mget(keys), "mget")
        if not values:
            return {}, 1
        decoded = unpack_many(values, keys=keys, vocab_size=self._vocab_size)
        found: dict[str, TokenIds] = {}
        for key, arr in zip(keys, decoded, strict=False):
            if isinstance(arr, CorruptEntryError):
                self._n.corrupt += 1
                logger.warning("token cache: dropping corrupt entry %s: %s", key, arr)
            elif arr is not None:
                self._l1.put(key, arr)
                found[key] = arr
        return found, 1

    def _l2_allowed(self) -> bool:
        """Whether a request (or write-back) may use L2 now; starts the probe when due.

        Requests never carry the half-open probe: a background ``ping`` does. A request's
        probe could be cancelled by its client, skipped by a write-back, or time out on the
        burst of reconnections that follows a restart under load, each time holding the
        circuit open for another ``reset_timeout_s``.
        """
        if self._breaker.state == "closed":
            return True
        if self._probe is None and self._breaker.allow():
            self._probe = asyncio.create_task(self._run_probe())
        self._n.skipped += 1
        return False

    async def _run_probe(self) -> None:
        assert self._store is not None
        try:
            await self._guarded(self._store.ping(), "probe", self._probe_timeout_s)
        except asyncio.CancelledError:
            self._breaker.release_probe()  # aclose() mid-probe
            raise
        finally:
            self._probe = None

    async def _guarded(
        self, op: Awaitable[T], what: str, timeout_s: float | None = None
    ) -> tuple[bool, T | None]:
        """Run one L2 operation under ``op_timeout_s``; report it to the breaker.

        The deadline counts the call's time while the loop was responsive (see ``within``):
        a reply that waited in the socket for a busy loop is not a Redis failure.
        """
        began = time.perf_counter()
        try:
            result = await within(op, timeout_s or self._op_timeout_s)
        except TimeoutError:
            self._failed(what, "timed out", began)
            self._n.timeouts += 1
            return False, None
        except Exception as exc:  # any store failure: the cache must never fail a request
            self._failed(what, repr(exc), began)
            return False, None
        if self._remote:
            record_redis_latency(what, time.perf_counter() - began)
        self._breaker.record_success()
        return True, result

    def _failed(self, what: str, why: str, began: float) -> None:
        """Count a failed L2 call; it counts against the breaker only when it began after the
        last failure that did. 32 requests in flight through one slow moment of Redis (or of
        the machine) time out together: one incident, not 32 consecutive failures, which
        opened the breaker on a healthy Redis under load. An outage still opens it: every new
        call fails too, each after the one before it (three in ``3 * op_timeout_s``)."""
        self._n.errors += 1
        if began > self._incident_at:
            self._incident_at = time.perf_counter()
            self._breaker.record_failure()
        logger.debug("token cache: L2 %s failed: %s", what, why)

    async def _tokenize(self, texts: dict[str, str], ttl_s: float | None) -> dict[str, TokenIds]:
        """IDs for ``texts`` (key -> text), each key tokenized at most once at a time."""
        made: dict[str, TokenIds] = {}
        shared: dict[str, asyncio.Future[TokenIds]] = {}
        own: dict[str, str] = {}
        for key, text in texts.items():
            fut = self._inflight.get(key)
            hit = None if fut is not None else self._l1.get(key)
            if fut is not None:
                shared[key] = fut
            elif hit is not None:  # another request filled it since our L1 check
                made[key] = hit
            else:
                own[key] = text
        self._n.coalesced += len(shared) + len(made)
        if own:
            made.update(await self._encode_owned(own, ttl_s))
        for key, fut in shared.items():
            made[key] = await self._await_shared(fut, key, texts[key], ttl_s)
        return made

    async def _encode_owned(
        self, texts: dict[str, str], ttl_s: float | None
    ) -> dict[str, TokenIds]:
        loop = asyncio.get_running_loop()
        futures = {key: loop.create_future() for key in texts}
        self._inflight.update(futures)
        try:
            made = await self._encode(texts)
        except BaseException as exc:
            _fail_all(futures, exc)
            raise
        finally:
            for key, fut in futures.items():
                if self._inflight.get(key) is fut:
                    del self._inflight[key]
        for key, arr in made.items():
            futures[key].set_result(arr)
        # A refused text (empty IDs) is never cached: a fixed encoder may accept it later.
        kept = {key: arr for key, arr in made.items() if len(arr)}
        for key, arr in kept.items():
            self._l1.put(key, arr)
        self._schedule_write(kept, ttl_s)
        return made

    async def _encode(self, texts: dict[str, str]) -> dict[str, TokenIds]:
        try:
            encoded = await self._tokenizer.encode_batch(list(texts.values()))
        except SegmentBoundaryError:
            # One text the segment encoder refuses must not fail the others: encode one by
            # one; a refused text gets an empty array (never cached) that callers drop.
            encoded = [await self._encode_alone(text) for text in texts.values()]
        if len(encoded) != len(texts):
            raise TokenizerError(f"encode_batch returned {len(encoded)} for {len(texts)} texts")
        return {key: self._narrow(arr) for key, arr in zip(texts, encoded, strict=True)}

    async def _encode_alone(self, text: str) -> TokenIds:
        try:
            [ids] = await self._tokenizer.encode_batch([text])
        except SegmentBoundaryError as exc:
            self._n.refused += 1
            logger.warning("token cache: segment refused, its chunk is left out: %s", exc)
            return np.empty(0, dtype=np.uint32)
        return ids

    def _narrow(self, ids: TokenIds) -> TokenIds:
        # Same dtype as an L2 hit (uint16 for small vocabularies): half the L1 bytes.
        out: TokenIds = as_token_ids(ids).astype(self._dtype)
        out.setflags(write=False)
        return out

    async def _await_shared(
        self, fut: asyncio.Future[TokenIds], key: str, text: str, ttl_s: float | None
    ) -> TokenIds:
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not fut.cancelled() or (task is not None and task.cancelling()):
                raise
        # The owner was cancelled, not us: tokenize it ourselves.
        return (await self._encode_owned({key: text}, ttl_s))[key]

    def _schedule_write(self, made: dict[str, TokenIds], ttl_s: float | None) -> None:
        if self._store is None or not made:
            return
        task = asyncio.create_task(self._write_back(self._store, made, ttl_s))
        self._tasks.add(task)  # a strong reference until done
        task.add_done_callback(self._tasks.discard)

    async def _write_back(
        self, store: TokenStore, made: dict[str, TokenIds], ttl_s: float | None
    ) -> None:
        try:
            items = {
                key: pack_ids(arr, key=key, vocab_size=self._vocab_size)
                for key, arr in made.items()
            }
        except ValueError as exc:
            self._n.write_errors += len(made)
            logger.warning("token cache: cannot pack tokenizer output: %s", exc)
            return
        if not self._l2_allowed():
            return
        ok, _ = await self._guarded(store.mset(items, ttl_s), "mset")
        if ok:
            self._n.writes += len(items)
        else:
            self._n.write_errors += len(items)

    def _lookup(
        self,
        ids: list[TokenIds | None],
        tiers: list[Tier],
        round_trips: int,
        marks: tuple[float, float, float, float],
    ) -> CacheLookup:
        done = [arr for arr in ids if arr is not None]
        assert len(done) == len(ids), "every text has ids"
        cached = 0
        for arr, tier in zip(done, tiers, strict=True):
            if tier != "miss":
                cached += len(arr)
        self._n.l1_hits += tiers.count("l1")
        self._n.l2_hits += tiers.count("l2")
        self._n.misses += tiers.count("miss")
        t0, t1, t2, t3 = marks
        timings = {"l1": t1 - t0, "l2": t2 - t1, "tokenize": t3 - t2, "total": t3 - t0}
        return CacheLookup(
            done, tiers, cached, round_trips, {k: v * 1000 for k, v in timings.items()}
        )

    async def flush(self) -> None:
        """Wait for every pending write-back (tests, shutdown, after :meth:`warm`)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def warm(
        self, collection: str, texts: Sequence[str], *, ttl_s: float | None = None
    ) -> int:
        """Tokenize and store every text not cached yet (expiring after ``ttl_s``, the
        cache's ``ttl_s`` when None); return how many were tokenized."""
        tokenized = 0
        for start in range(0, len(texts), _WARM_BATCH):
            batch = texts[start : start + _WARM_BATCH]
            lookup = await self.get_many(collection, batch, ttl_s=ttl_s)
            tokenized += lookup.tiers.count("miss")
        await self.flush()
        return tokenized

    async def invalidate(self, collection: str) -> int:
        """Drop every entry of ``collection`` from L1 and L2; return how many L2 keys were
        removed (L1 entries when there is no store). L2 failures raise ``CacheError``."""
        await self.flush()  # a pending write-back must not re-create keys afterwards
        prefix = collection_prefix(self._prefix, collection)
        removed = self._l1.delete_prefix(prefix)
        if self._store is None:
            return removed
        return await self._store.delete_prefix(prefix)

    async def check_memory_policy(self) -> dict[str, Any]:
        """The L2 store's memory bounding report (logged as a warning when it is unsafe)."""
        if self._store is None:
            return {"backend": "none", "ok": True, "warning": None}
        return await self._store.check_memory_policy()

    async def l2_health(self, timeout_s: float = 1.0) -> dict[str, Any]:
        """A cheap readiness check of the L2 store: ONE ``ping``, outside the breaker.

        Returns ``{"state", "latency_ms", "reason", "breaker"}``: ``state`` is ``"ok"``,
        ``"down"`` (the store failed, refused our credentials or took longer than
        ``timeout_s``) or ``"none"`` (no L2 configured); ``reason`` says why it is down
        (the error's class and message, URL credentials masked, never a password), else
        None; ``breaker`` is the L2 circuit's state. Never raises.
        """
        breaker = self._breaker.state
        if self._store is None:
            return {"state": "none", "latency_ms": None, "reason": None, "breaker": breaker}
        t0 = time.perf_counter()
        reason = None
        try:
            await within(self._store.ping(), timeout_s)
        except TimeoutError:
            reason = f"no answer within {timeout_s} s"
        except Exception as exc:  # any store failure is "down", never an error of the probe
            reason = _reason(exc)
        latency_ms = (time.perf_counter() - t0) * 1000
        state = "ok" if reason is None else "down"
        return {"state": state, "latency_ms": latency_ms, "reason": reason, "breaker": breaker}

    def stats(self) -> CacheStats:
        n = self._n
        return CacheStats(
            **asdict(n),
            evictions=self._l1.evictions,
            l1_bytes=self._l1.bytes,
            l1_entries=len(self._l1),
            l1_max_bytes=self._l1.max_bytes,
            breaker_state=self._breaker.state,
            breaker_opened=self._breaker.opened_count,
        )

    async def aclose(self) -> None:
        """Finish pending write-backs, then close the store."""
        await self.flush()
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self._store is not None:
            await self._store.aclose()

    async def __aenter__(self) -> TokenCache:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _reason(exc: BaseException) -> str:
    """Why the store is down, fit for a health report: the vendor error behind ours, with
    URL credentials masked (redis-py names host and port only, but a URL may get in)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    text = f"{type(cause).__name__}: {cause}"
    return _URL_CREDENTIALS.sub(r"\1***@", text)[:_REASON_CHARS]


def _check_ttl(ttl_s: float | None) -> None:
    if ttl_s is not None and not ttl_s > 0:
        raise ValueError(f"ttl_s must be > 0 seconds (or None for the cache's), got {ttl_s}")


def _fill(
    todo: dict[str, list[int]],
    found: dict[str, TokenIds],
    ids: list[TokenIds | None],
    tiers: list[Tier],
    tier: Tier,
) -> None:
    """Move the keys of ``found`` out of ``todo`` into ``ids``/``tiers`` (in place)."""
    for key, arr in found.items():
        for i in todo.pop(key):
            ids[i] = arr
            tiers[i] = tier


def _fail_all(futures: dict[str, asyncio.Future[TokenIds]], exc: BaseException) -> None:
    for fut in futures.values():
        if fut.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            fut.cancel()
        else:
            fut.set_exception(exc)
            fut.exception()  # marks it retrieved: no "never retrieved" log without waiters
