"""The whole token-cached pipeline, on real parts: MiniLM, the embedded store, real tokenizers,
the token cache (memory and real Redis) and a real HTTP inference server that checks the IDs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from genesis.cache import MemoryTokenStore, RedisTokenStore, TokenCache
from genesis.knowledge import KnowledgeBase, MiniLMEmbedder
from genesis.llm import CompletionsBackend, ExtractiveBackend
from genesis.observability import STAGE_ORDER
from genesis.rag import PromptAssembler, PromptTemplate, TokenCachedRAG
from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.tokens import HFTokenizer, SegmentEncoder

DEMO_SUPPORT = Path(__file__).resolve().parents[2] / "src" / "genesis" / "demo_kb" / "support"
QUESTION = "How do I rotate an API key?"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    model = MiniLMEmbedder()
    model.warm_up()
    return model


@pytest.fixture(scope="module")
def mistral(tokenizers_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizers_dir / "mistral-7b-v0.1")


@pytest.fixture
async def kb(
    tmp_path_factory: pytest.TempPathFactory, embedder: MiniLMEmbedder
) -> AsyncIterator[KnowledgeBase]:
    # Module-wide folder: ingesting once is what a real deployment does; re-ingest is free.
    root = tmp_path_factory.getbasetemp() / "pipeline-kb"
    base = KnowledgeBase.embedded(root, embedder)
    await base.ingest(DEMO_SUPPORT, "support")
    yield base
    await base.aclose()


async def _rag(kb: KnowledgeBase, cache: TokenCache, generate: object) -> TokenCachedRAG:
    assembler = PromptAssembler(
        cache.tokenizer,  # type: ignore[arg-type]
        PromptTemplate(system="You are the support agent. Cite sources as [n]."),
    )
    await assembler.warm_up()
    return TokenCachedRAG(kb, cache, assembler, generate, max_context_tokens=2048)  # type: ignore[arg-type]


async def test_answer_reports_sources_usage_and_stage_timings(
    kb: KnowledgeBase, mistral: HFTokenizer
) -> None:
    cache = TokenCache(SegmentEncoder(mistral), MemoryTokenStore())
    rag = await _rag(kb, cache, ExtractiveBackend().generate)
    result = await rag.answer(QUESTION, "support", top_k=5, max_tokens=256)
    assert result.extractive
    assert "extractive" in result.answer.lower()
    assert result.sources, "an extractive answer cites what it quotes"
    assert any("rotate" in s.source for s in result.sources)
    stages = {"embed", "retrieve", "token_cache", "assemble", "generate", "total"}
    assert stages <= set(result.timings_ms)
    # One set of stage names: the server's waterfall and `genesis profile` use these as they are.
    assert set(result.timings_ms) - {"total"} <= set(STAGE_ORDER)
    usage = result.usage
    assert usage.prompt_tokens == usage.template_tokens + usage.chunk_tokens + usage.query_tokens
    assert usage.chunks_retrieved == 5
    await cache.aclose()


async def test_second_request_takes_every_chunk_from_the_cache(
    kb: KnowledgeBase, mistral: HFTokenizer
) -> None:
    cache = TokenCache(SegmentEncoder(mistral), MemoryTokenStore())
    rag = await _rag(kb, cache, ExtractiveBackend().generate)
    first = await rag.answer(QUESTION, "support", top_k=4)
    second = await rag.answer(QUESTION, "support", top_k=4)
    assert first.cache_tiers == {"miss": 4}
    assert first.usage.chunks_from_cache == 0
    assert second.cache_tiers == {"l1": 4}
    assert second.usage.chunks_from_cache == second.usage.chunks_in_prompt
    assert second.usage.cached_tokens == second.usage.template_tokens + second.usage.chunk_tokens
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    await cache.aclose()


@pytest.mark.integration
async def test_completions_backend_receives_exactly_the_assembled_prompt_ids(
    kb: KnowledgeBase, mistral: HFTokenizer
) -> None:
    cache = TokenCache(SegmentEncoder(mistral), MemoryTokenStore())
    prompts: list[str] = []

    def check(decoded: str) -> str | None:
        # The server decodes the IDs it received with the same tokenizer; the pipeline's
        # prompt text must be exactly that, and re-encoding it must give the same IDs.
        prompts.append(decoded)
        return None

    with FakeOpenAIServer(mistral, ["baseline"], expect_prompt=check) as server:
        backend = CompletionsBackend(server.base_url)
        rag = await _rag(kb, cache, backend.generate)
        result = await rag.answer(QUESTION, "support", include_prompt=True)
        await backend.aclose()
        received = server.calls("baseline", "completions")
    assert result.answer == "Reply from baseline."
    assert not result.extractive
    assert len(received) == 1
    ids = received[0]["prompt_ids"]
    assert ids == mistral.encode_batch_sync([result.prompt_text or ""])[0].tolist()
    assert prompts == [result.prompt_text]
    assert result.usage.prompt_tokens == len(ids)
    assert QUESTION in prompts[0]
    await cache.aclose()


@pytest.mark.integration
async def test_redis_serves_a_fresh_process_in_one_round_trip(
    kb: KnowledgeBase,
    mistral: HFTokenizer,
    redis_client: aioredis.Redis,
    redis_prefix: str,
) -> None:
    encoder = SegmentEncoder(mistral)
    writer = TokenCache(encoder, RedisTokenStore(redis_client), prefix=redis_prefix)
    rag = await _rag(kb, writer, ExtractiveBackend().generate)
    await rag.answer(QUESTION, "support", top_k=3)
    await writer.flush()
    # A second "process": empty L1, same Redis.
    reader = TokenCache(encoder, RedisTokenStore(redis_client), prefix=redis_prefix)
    rag2 = await _rag(kb, reader, ExtractiveBackend().generate)
    result = await rag2.answer(QUESTION, "support", top_k=3)
    assert result.cache_tiers == {"l2": 3}
    assert result.usage.chunks_from_cache == result.usage.chunks_in_prompt
    await writer.invalidate("support")
    await writer.aclose()
    await reader.aclose()


async def test_empty_question_is_refused(kb: KnowledgeBase, mistral: HFTokenizer) -> None:
    cache = TokenCache(SegmentEncoder(mistral), MemoryTokenStore())
    rag = await _rag(kb, cache, ExtractiveBackend().generate)
    with pytest.raises(ValueError, match="query is empty"):
        await rag.answer("   ", "support")
    await cache.aclose()


async def test_history_turns_come_from_the_token_cache_like_chunks(
    kb: KnowledgeBase, mistral: HFTokenizer
) -> None:
    from genesis.rag import Turn
    from genesis.rag._pipeline import HISTORY_COLLECTION

    cache = TokenCache(SegmentEncoder(mistral), MemoryTokenStore())
    rag = await _rag(kb, cache, ExtractiveBackend().generate)
    history = [Turn.exchange(QUESTION, "Open Settings, then API keys, then Rotate.")]
    first = await rag.answer("And the old key?", "support", top_k=3, history=history)
    assert first.usage.history_turns == 1 and first.usage.history_tokens > 0
    hits_before = cache.stats().l1_hits
    again = await rag.answer("And the old key?", "support", top_k=3, history=history)
    # Chunks and the turn all from L1 now: nothing tokenized twice.
    assert cache.stats().l1_hits - hits_before == again.usage.chunks_retrieved + 1
    assert again.usage.prompt_tokens == (
        again.usage.template_tokens
        + again.usage.chunk_tokens
        + again.usage.history_tokens
        + again.usage.query_tokens
    )
    [ids] = (await cache.get_many(HISTORY_COLLECTION, [history[0].segment_text()])).ids
    assert len(ids) == again.usage.history_tokens
    # Served from the cache the second time, so counted as cached (and not the first time).
    assert again.usage.cached_tokens - first.usage.cached_tokens >= again.usage.history_tokens
    await cache.aclose()
