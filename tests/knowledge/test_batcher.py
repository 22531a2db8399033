"""QueryBatcher: concurrent query misses share one forward pass, off the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from genesis.errors import RetrievalError
from genesis.knowledge import MiniLMEmbedder, QueryBatcher, Vector


def fake_vector(text: str) -> Vector:
    """A deterministic unit vector per text, so each caller's row can be checked."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    out: Vector = v / np.linalg.norm(v)
    return out


class SpyEmbedder(MiniLMEmbedder):
    """Counts forward passes and records their thread; optionally blocks or fails."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []
        self.thread_names: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail: Exception | None = None

    def embed_documents(self, texts: Sequence[str]) -> Vector:
        self.calls.append(list(texts))
        self.thread_names.append(threading.current_thread().name)
        assert self.gate.wait(10), "test gate never opened"
        if self.fail is not None:
            raise self.fail
        return np.stack([fake_vector(t) for t in texts])


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2, thread_name_prefix="embed-pool") as pool:
        yield pool


@pytest.fixture
def spy() -> SpyEmbedder:
    return SpyEmbedder()


@pytest.fixture
async def batcher(spy: SpyEmbedder, executor: ThreadPoolExecutor) -> AsyncIterator[QueryBatcher]:
    qb = QueryBatcher(spy, executor=executor, max_batch=32, max_wait_ms=5)
    yield qb
    spy.gate.set()
    await qb.aclose()


async def gather(*aws: Awaitable[Any], return_exceptions: bool = False) -> list[Any]:
    """``asyncio.gather`` that fails after 10 s instead of hanging on a lost future."""
    return await asyncio.wait_for(
        asyncio.gather(*aws, return_exceptions=return_exceptions), timeout=10
    )


async def until(predicate: object, what: str) -> None:
    """Yield to the loop until ``predicate()`` holds (the executor runs in other threads)."""
    assert callable(predicate)
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_concurrent_queries_share_one_forward_pass_in_the_executor(
    spy: SpyEmbedder, batcher: QueryBatcher
) -> None:
    texts = [f"question number {i}" for i in range(10)]
    vectors = await gather(*(batcher.embed_query(t) for t in texts))
    assert len(spy.calls) == 1 and sorted(spy.calls[0]) == sorted(texts)
    assert spy.thread_names[0].startswith("embed-pool")
    for text, vector in zip(texts, vectors, strict=True):
        np.testing.assert_array_equal(vector, fake_vector(text))
        assert vector.shape == (384,) and vector.dtype == np.float32
        assert not vector.flags.writeable
    assert (batcher.batches, batcher.embedded, batcher.largest_batch) == (1, 10, 10)
    assert batcher.queries == 10


async def test_identical_texts_in_flight_are_embedded_once(
    spy: SpyEmbedder, batcher: QueryBatcher
) -> None:
    vectors = await gather(*(batcher.embed_query(t) for t in ["a", "b", "a", "a"]))
    assert spy.calls == [["a", "b"]]
    assert vectors[0] is vectors[2] is vectors[3]
    np.testing.assert_array_equal(vectors[1], fake_vector("b"))


async def test_the_embedder_cache_stays_in_front(spy: SpyEmbedder, batcher: QueryBatcher) -> None:
    first = await batcher.embed_query("cached question")
    assert await batcher.embed_query("cached question") is first
    assert spy.embed_query("cached question") is first  # one cache for both paths
    spy.cache_query("stored elsewhere", fake_vector("stored elsewhere"))
    await batcher.embed_query("stored elsewhere")
    assert spy.calls == [["cached question"]]
    assert (batcher.queries, batcher.cache_hits) == (3, 2)


async def test_batches_never_exceed_max_batch(
    spy: SpyEmbedder, executor: ThreadPoolExecutor
) -> None:
    qb = QueryBatcher(spy, executor=executor, max_batch=4, max_wait_ms=20)
    texts = [f"q{i}" for i in range(10)]
    vectors = await gather(*(qb.embed_query(t) for t in texts))
    await qb.aclose()
    assert sorted(len(c) for c in spy.calls) == [2, 4, 4]
    assert sorted(t for c in spy.calls for t in c) == sorted(texts)
    assert qb.largest_batch == 4
    for text, vector in zip(texts, vectors, strict=True):
        np.testing.assert_array_equal(vector, fake_vector(text))


async def test_an_error_reaches_every_caller_of_the_batch(
    spy: SpyEmbedder, batcher: QueryBatcher
) -> None:
    spy.fail = RetrievalError("forward pass failed")
    results = await gather(
        *(batcher.embed_query(t) for t in ["x", "y", "x"]), return_exceptions=True
    )
    assert all(isinstance(r, RetrievalError) for r in results), results
    spy.fail = None  # nothing was cached: the next call embeds again
    np.testing.assert_array_equal(await batcher.embed_query("x"), fake_vector("x"))
    assert len(spy.calls) == 2


async def test_a_cancelled_caller_does_not_break_the_others(
    spy: SpyEmbedder, batcher: QueryBatcher
) -> None:
    spy.gate.clear()
    tasks = [asyncio.create_task(batcher.embed_query(t)) for t in ["p", "q", "p"]]
    await until(lambda: spy.calls, "the batch to start")
    tasks[0].cancel()
    spy.gate.set()
    results = await gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    np.testing.assert_array_equal(results[1], fake_vector("q"))
    np.testing.assert_array_equal(results[2], fake_vector("p"))
    assert spy.calls == [["p", "q"]]


async def test_a_caller_cancelled_before_dispatch_leaves_its_batch_intact(
    spy: SpyEmbedder, batcher: QueryBatcher
) -> None:
    gone = asyncio.create_task(batcher.embed_query("gone"))
    stays = asyncio.create_task(batcher.embed_query("stays"))
    await asyncio.sleep(0)
    gone.cancel()
    np.testing.assert_array_equal(await stays, fake_vector("stays"))
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_misses_collect_while_max_inflight_batches_run(
    spy: SpyEmbedder, executor: ThreadPoolExecutor
) -> None:
    qb = QueryBatcher(spy, executor=executor, max_wait_ms=1, max_inflight=1)
    spy.gate.clear()
    first = asyncio.create_task(qb.embed_query("first"))
    await until(lambda: spy.calls, "the first batch to start")
    rest = [asyncio.create_task(qb.embed_query(f"r{i}")) for i in range(4)]
    await asyncio.sleep(0.05)  # far past max_wait: held back because one batch is running
    assert len(spy.calls) == 1
    spy.gate.set()
    await gather(first, *rest)
    await qb.aclose()
    assert spy.calls == [["first"], ["r0", "r1", "r2", "r3"]]


async def test_aclose_embeds_what_was_collected_and_then_refuses(
    spy: SpyEmbedder, executor: ThreadPoolExecutor
) -> None:
    qb = QueryBatcher(spy, executor=executor, max_wait_ms=10_000)
    spy.gate.clear()
    waiting = asyncio.create_task(qb.embed_query("collected"))
    await asyncio.sleep(0)
    closing = asyncio.create_task(qb.aclose())
    await until(lambda: spy.calls, "aclose to dispatch the collected query")
    assert not closing.done()  # it waits for the running batch
    spy.gate.set()
    await closing
    assert waiting.done()
    np.testing.assert_array_equal(waiting.result(), fake_vector("collected"))
    with pytest.raises(RetrievalError, match="closed"):
        await qb.embed_query("late")
    assert spy.calls == [["collected"]] and qb.closed


def test_bad_settings_are_refused(spy: SpyEmbedder) -> None:
    for kwargs in ({"max_batch": 0}, {"max_wait_ms": -1.0}, {"max_inflight": 0}):
        with pytest.raises(RetrievalError, match="batcher settings"):
            QueryBatcher(spy, **kwargs)  # type: ignore[arg-type]


@pytest.mark.slow
async def test_real_model_rows_equal_single_embeddings(executor: ThreadPoolExecutor) -> None:
    model = MiniLMEmbedder()
    qb = QueryBatcher(model, executor=executor)
    texts = ["How do I declare a path parameter?", "hello", "", "OAuth2 with JWT tokens " * 20]
    vectors = await gather(*(qb.embed_query(t) for t in texts))
    await qb.aclose()
    assert qb.batches == 1
    for text, vector in zip(texts, vectors, strict=True):
        np.testing.assert_allclose(vector, model.embed_documents([text])[0], atol=1e-5)
        assert model.embed_query(text) is vector
