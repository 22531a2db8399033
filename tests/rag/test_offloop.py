"""The event loop stays free while a request's CPU and disk work runs.

No timings: each blocking part waits on a gate that only a coroutine ON THE LOOP opens. If the
part ran inline on the loop, that coroutine could never run: the gate times out (10 s) and the
part raises, failing the test. Real parts otherwise: the embedded store, SQLite catalog, BM25,
the MiniLM tokenizer, the token cache and the extractive answerer.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
import pytest

from genesis._executor import CpuExecutor, install_executor
from genesis.cache import MemoryTokenStore, TokenCache
from genesis.knowledge import (
    EmbeddedVectorStore,
    KnowledgeBase,
    VectorHit,
    bm25_terms,
    default_model_dir,
)
from genesis.llm import ExtractiveBackend
from genesis.rag import PromptAssembler, TokenCachedRAG
from genesis.tokens import HFTokenizer, SegmentEncoder, TokenIds

P = ParamSpec("P")
T = TypeVar("T")
DEMO_SUPPORT = Path(__file__).resolve().parents[2] / "src" / "genesis" / "demo_kb" / "support"
QUESTION = "How do I rotate an API key?"
_GATE_S = 10.0


class Gate:
    """Blocks a worker until the loop opens it; ``armed`` False lets calls through."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self._open = threading.Event()

    def pass_through(self, what: str) -> None:
        if not self.armed:
            return
        self.entered.set()
        if not self._open.wait(_GATE_S):
            raise AssertionError(f"{what} blocked the event loop: nothing on it opened the gate")

    def spin(self, what: str) -> None:
        """Busy CPU (holds the GIL in slices) until opened: a CPU-bound step."""
        if not self.armed:
            return
        self.entered.set()
        give_up = time.monotonic() + _GATE_S  # a guard against a hang, not a measurement
        while not self._open.is_set():
            if time.monotonic() > give_up:
                raise AssertionError(f"{what} blocked the event loop: the gate never opened")

    def open(self) -> None:
        self._open.set()


class GatedEmbedder:
    """A deterministic bag-of-words embedder (no model) whose query embedding waits at a gate,
    sleeping (``cpu=False``) or spinning (``cpu=True``)."""

    dim = 384
    fingerprint = "gated-test"

    def __init__(self, gate: Gate, *, cpu: bool = False) -> None:
        self.gate = gate
        self.cpu = cpu

    def warm_up(self) -> None:
        pass

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            out[row, 0] = 1e-3
            for term in bm25_terms(text):
                out[row, zlib.crc32(term.encode()) % self.dim] += 1.0
        normed: npt.NDArray[np.float32] = out / np.linalg.norm(out, axis=1, keepdims=True)
        return normed

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        (self.gate.spin if self.cpu else self.gate.pass_through)("the query embedding")
        return self.embed_documents([text])[0]


class GatedStore(EmbeddedVectorStore):
    def __init__(self, path: Path, gate: Gate) -> None:
        super().__init__(path)
        self.gate = gate

    def search_sync(
        self,
        collection: str,
        vector: npt.NDArray[np.float32],
        top_k: int,
        where: Mapping[str, str] | None = None,
    ) -> list[VectorHit]:
        self.gate.pass_through("the dense search")
        return super().search_sync(collection, vector, top_k, where)


class GatedTokenizer(HFTokenizer):
    gate = Gate()

    def encode_batch_sync(self, texts: Sequence[str]) -> list[TokenIds]:
        self.gate.pass_through("tokenizing cache misses")
        return super().encode_batch_sync(texts)


class CountingExecutor(CpuExecutor):
    """Records the name of every function sent to it."""

    def __init__(self) -> None:
        super().__init__(2, name="counting-cpu")
        self.calls: list[str] = []

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        self.calls.append(getattr(fn, "__qualname__", repr(fn)))
        return await super().run(fn, *args, **kwargs)


@pytest.fixture
def executor() -> Iterator[CountingExecutor]:
    mine = CountingExecutor()
    previous = install_executor(mine)
    yield mine
    install_executor(previous)
    mine.shutdown()


@pytest.fixture
def tokenizer() -> GatedTokenizer:
    GatedTokenizer.gate = Gate()
    tok = GatedTokenizer.from_file(default_model_dir() / "tokenizer.json")
    assert isinstance(tok, GatedTokenizer)
    return tok


class Parts:
    def __init__(self, rag: TokenCachedRAG, kb: KnowledgeBase, gates: dict[str, Gate]) -> None:
        self.rag, self.kb, self.gates = rag, kb, gates


async def _parts(root: Path, tokenizer: GatedTokenizer, *, cpu_embedder: bool) -> Parts:
    gates = {"embed": Gate(), "retrieve": Gate(), "token_cache": tokenizer.gate}
    kb = KnowledgeBase(
        root,
        GatedEmbedder(gates["embed"], cpu=cpu_embedder),
        GatedStore(root / "vectors", gates["retrieve"]),
        chunk_tokens=128,
        count_tokens=tokenizer.count,
    )
    await kb.ingest(DEMO_SUPPORT, "support")
    cache = TokenCache(SegmentEncoder(tokenizer), MemoryTokenStore())
    assembler = PromptAssembler(SegmentEncoder(tokenizer))
    await assembler.warm_up()
    rag = TokenCachedRAG(kb, cache, assembler, ExtractiveBackend().generate)
    return Parts(rag, kb, gates)


@pytest.fixture
async def parts(tmp_path: Path, tokenizer: GatedTokenizer) -> AsyncIterator[Parts]:
    made = await _parts(tmp_path / "kb", tokenizer, cpu_embedder=False)
    yield made
    await made.kb.aclose()


async def _loop_serves_while(gate: Gate, request: Awaitable[T]) -> T:
    """Start ``request``; once it is inside ``gate``, open the gate from the loop."""
    gate.armed = True
    task = asyncio.ensure_future(request)
    entered = await asyncio.to_thread(gate.entered.wait, _GATE_S)
    assert entered, "the request never reached the gated step"
    gate.open()  # runs on the loop: proof that the loop was free while the step ran
    return await task


@pytest.mark.parametrize("stage", ["embed", "retrieve", "token_cache"])
async def test_a_slow_stage_leaves_the_loop_free(
    parts: Parts, executor: CountingExecutor, stage: str
) -> None:
    answer = await _loop_serves_while(parts.gates[stage], parts.rag.answer(QUESTION, "support"))
    assert any("rotate" in s.source for s in answer.sources)


async def test_a_cpu_bound_embedder_leaves_the_loop_free(
    tmp_path: Path, tokenizer: GatedTokenizer, executor: CountingExecutor
) -> None:
    made = await _parts(tmp_path / "kb", tokenizer, cpu_embedder=True)
    try:
        answer = await _loop_serves_while(made.gates["embed"], made.rag.answer(QUESTION, "support"))
        assert answer.sources
    finally:
        await made.kb.aclose()


async def test_every_stage_of_a_request_goes_through_the_executor(
    parts: Parts, executor: CountingExecutor
) -> None:
    executor.calls.clear()
    answer = await parts.rag.answer(QUESTION, "support", top_k=4)
    calls = executor.calls
    assert calls[0] == "GatedEmbedder.embed_query"  # embed
    assert "KnowledgeBase._search_sync" in calls  # dense + BM25 + catalog in one hop
    assert "SegmentEncoder._encode_sync" in calls  # the chunk misses and the query segment
    assert calls[-1] == "extractive_answer"  # generate
    assert {"embed", "retrieve", "token_cache", "assemble", "generate"} <= set(answer.timings_ms)
    # One hop per stage and no more: embed, search, chunk misses, query segment, answer.
    assert len(calls) == 5, calls


async def test_cached_chunks_cost_no_tokenizer_hop_for_them(
    parts: Parts, executor: CountingExecutor
) -> None:
    await parts.rag.answer(QUESTION, "support", top_k=4)
    executor.calls.clear()
    again = await parts.rag.answer(QUESTION, "support", top_k=4)
    assert again.cache_tiers == {"l1": 4}
    # embed, search, the answer: the chunks came from L1, and the assembler kept the
    # question segment's IDs (it is assembled once per collection weighed).
    assert executor.calls.count("SegmentEncoder._encode_sync") == 0
    await parts.rag.answer(QUESTION + " Thanks.", "support", top_k=4)
    assert executor.calls.count("SegmentEncoder._encode_sync") == 1  # a new question


async def test_an_injected_async_query_embedder_replaces_the_executor_hop(
    tmp_path: Path, tokenizer: GatedTokenizer, executor: CountingExecutor
) -> None:
    asked: list[str] = []
    made = await _parts(tmp_path / "kb", tokenizer, cpu_embedder=False)
    embedder = made.kb.embedder

    async def batched(text: str) -> Any:
        asked.append(text)
        return embedder.embed_documents([text])[0]

    kb = KnowledgeBase(
        tmp_path / "kb",
        embedder,
        EmbeddedVectorStore(tmp_path / "kb" / "vectors"),
        chunk_tokens=128,
        count_tokens=tokenizer.count,
        embed_query_async=batched,
    )
    try:
        executor.calls.clear()
        hits = await kb.search(QUESTION, "support", 3)
        assert asked == [QUESTION] and hits
        assert "GatedEmbedder.embed_query" not in executor.calls
    finally:
        await kb.aclose()
        await made.kb.aclose()
