"""The composed application: six agents over their own collections, each with its own TTL."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from genesis.app import Genesis
from genesis.errors import UnknownAgentError

pytestmark = [pytest.mark.slow]

QUESTIONS = {
    "support": "How do I rotate an API key?",
    "documentation": "How does pagination work?",
    "business_generation": "Draft a one-page plan for a bike repair van",
    "qa": "How should I name pytest tests?",
    "code_review": "Why are mutable default arguments a bug?",
    "se_darwin": "How do I speed up membership tests?",
}


@pytest.mark.integration
async def test_every_agent_answers_from_its_collection_with_its_own_ttl(
    demo_home: Path, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    overrides = {
        "home": str(demo_home),
        "redis.url": "redis://127.0.0.1:6379/0",
        "cache.prefix": redis_prefix[:16],
    }
    async with Genesis.from_config("dev", environ={}, overrides=overrides) as genesis:
        assert type(genesis.store).__name__ == "RedisTokenStore"
        for name, question in QUESTIONS.items():
            profile = genesis.settings.agents[name]
            answer = await genesis.agent(name).answer(question)
            await genesis.token_cache.flush()
            assert answer.collection == profile.collection
            assert answer.cache_tiers == {"miss": answer.usage.chunks_retrieved}
            keys = [k async for k in redis_client.scan_iter(f"{redis_prefix[:16]}:{name}:*")]
            assert keys, f"{name}: nothing written back to Redis"
            ttls = {await redis_client.ttl(k) for k in keys}
            assert all(abs(t - profile.cache_ttl_s) <= 5 for t in ttls), (name, ttls)
            again = await genesis.agent(name).answer(question)
            assert again.usage.chunks_from_cache == again.usage.chunks_in_prompt
        await genesis.cache_clear()


async def test_routing_and_unknown_agents(demo_home: Path) -> None:
    async with Genesis.from_config("dev", environ={}, overrides={"home": str(demo_home)}) as g:
        result = await g.ask("I was charged twice, can I get a refund?")
        assert result.agent == "support"
        assert result.route_method == "rule"
        assert list(result.answer.timings_ms)[0] == "route"
        assert math.isclose(
            result.answer.timings_ms["total"],
            sum(v for k, v in result.answer.timings_ms.items() if k != "total"),
            rel_tol=0.5,
        )
        with pytest.raises(UnknownAgentError, match="known agents: business_generation"):
            g.agent("nobody")


async def test_health_reports_collections(demo_home: Path) -> None:
    async with Genesis.from_config("dev", environ={}, overrides={"home": str(demo_home)}) as g:
        report = await g.health()
    assert report["status"] == "ok"
    assert set(report["collections"]) >= set(QUESTIONS)


@pytest.mark.integration
async def test_vllm_and_redis_by_configuration_alone(
    demo_home: Path, tokenizers_dir: Path, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    from genesis.testing.fake_openai import FakeOpenAIServer
    from genesis.tokens import HFTokenizer

    served = HFTokenizer.from_file(tokenizers_dir / "mistral-7b-v0.1")
    finetuned = "ft:open-mistral-7b:genesis:support-v3"
    with FakeOpenAIServer(served, [finetuned, "open-mistral-7b"]) as server:
        overrides = {
            "home": str(demo_home),
            "redis.url": "redis://127.0.0.1:6379/0",
            "cache.prefix": redis_prefix[:16],
            "tokenizer.kind": "remote",
            "tokenizer.vocab_size": "32000",
            "llm.backend": "completions",
            "llm.base_url": server.base_url,
            "llm.default_model": "open-mistral-7b",
            "llm.timeout_s": "5",
            "llm.attempt_timeout_s": "2",
        }
        async with Genesis.from_config("dev", environ={}, overrides=overrides) as genesis:
            first = await genesis.ask("How do I rotate an API key?", agent="support")
            # The served model saw exactly the prompt Genesis assembled, as token IDs.
            [call] = server.calls(finetuned, "completions")
            assert first.answer.answer == f"Reply from {finetuned}."
            assert first.answer.model == finetuned
            assert call["prompt_ids"] == served.encode_batch_sync([call["prompt"]])[0].tolist()
            assert "How do I rotate an API key?" in call["prompt"]
            assert first.answer.usage.prompt_tokens == len(call["prompt_ids"])
            # The fine-tuned model fails: the baseline answers and the fallback is counted.
            server.script(finetuned, [500, 500, 500])
            second = await genesis.ask("How do I rotate an API key?", agent="support")
            assert second.answer.model == "open-mistral-7b"
            assert genesis.registry.fallback_counts[("support", "server_error")] == 1
            await genesis.cache_clear("support")


async def test_starts_and_answers_with_redis_down(demo_home: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    overrides = {
        "home": str(demo_home),
        "redis.url": f"redis://127.0.0.1:{port}/0",
        "cache.breaker_failures": "1",
        "cache.breaker_reset_s": "60",
    }
    async with Genesis.from_config("dev", environ={}, overrides=overrides) as genesis:
        assert genesis.token_cache.breaker.failure_threshold == 1
        result = await genesis.ask("How long do refunds take?")
        assert result.answer.sources
        assert result.answer.cache_tiers == {"miss": result.answer.usage.chunks_retrieved}
        assert genesis.token_cache.stats().breaker_state == "open"
        assert (await genesis.health())["status"] == "degraded"


async def test_ready_is_not_ok_until_everything_a_first_request_needs_is_loaded(
    demo_home: Path,
) -> None:
    g = Genesis.from_config("dev", environ={}, overrides={"home": str(demo_home)})
    assert (await g.health())["status"] == "starting"
    async with g:
        assert g.serving
        assert g.router.warmed_up  # card vectors loaded during warm_up, not on first ask
        report = await g.health()
        assert (report["status"], report["ready"]) == ("ok", True)
    assert not g.serving
    assert (await g.health())["status"] == "starting"


async def test_router_card_vectors_are_cached_under_the_home(demo_home: Path) -> None:
    overrides = {"home": str(demo_home)}
    async with Genesis.from_config("dev", environ={}, overrides=overrides):
        pass
    # The card texts, the intent examples' vectors and the intent weights: one file each.
    files = sorted((demo_home / "router").glob("cards-*.npy"))
    assert len(files) == 3, files
    written = sorted(f.stat().st_mtime_ns for f in files)
    async with Genesis.from_config("dev", environ={}, overrides=overrides) as again:
        assert again.router.warmed_up
        decision = await again.route_async("I'd like to open a bakery, who are my customers?")
    assert decision.agent == "business_generation"
    again_files = (demo_home / "router").glob("cards-*.npy")
    assert sorted(p.stat().st_mtime_ns for p in again_files) == written  # read, not rewritten


def test_the_cli_and_app_do_not_import_server_or_heavy_engines() -> None:
    """What `genesis ask` imports: a warm call should cost little more than Python's start."""
    import subprocess
    import sys

    heavy = ["uvicorn", "fastapi", "qdrant_client", "torch", "sentence_transformers"]
    heavy.append("prometheus_client")  # only once metrics are enabled (the server)
    heavy += ["redis", "sqlalchemy"]  # only with redis.url / once a database is opened
    heavy.append("httpx")  # only with an HTTP backend or a remote tokenizer
    code = (
        "import sys, genesis.cli, genesis.app; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == ""


async def test_using_genesis_before_warm_up_is_a_clear_error(tmp_path: Path) -> None:
    from genesis.errors import NotWarmedUpError

    genesis = Genesis.from_config("dev", environ={}, overrides={"home": str(tmp_path)})
    with pytest.raises(NotWarmedUpError, match=r"warm_up\(\)"):
        _ = genesis.kb
    with pytest.raises(NotWarmedUpError, match="Genesis.agents"):
        await genesis.ask("How do I rotate an API key?", agent="support")
    assert genesis.settings.env == "dev"  # the light part is there from __init__


async def test_ingestion_stores_the_text_vectors_a_warm_process_needs(demo_home: Path) -> None:
    from genesis.app import evidence_sentences

    overrides = {"home": str(demo_home)}
    async with Genesis.from_config("dev", environ={}, overrides=overrides) as g:
        demo = sorted({p.collection for p in g.settings.agents.values()})  # others add theirs
        chunks = [c.text for name in demo for c in await g.kb.all_chunks(name)]
        stored = g.text_vectors.store.get_many(evidence_sentences(chunks))
        assert stored and all(v is not None for v in stored)
        result = await g.ask("How do I rotate an API key?")
        assert result.answer.sources
        # Every sentence the evidence check weighed was read from the store, none embedded.
        assert (g.text_vectors.hits > 0, g.text_vectors.misses) == (True, 0)
    assert (demo_home / "text_vectors.sqlite").is_file()


@pytest.mark.parametrize("at_ingest", [False, True])
async def test_a_users_corpus_gets_its_sentence_vectors_at_first_use_unless_asked_earlier(
    demo_home: Path, tmp_path: Path, at_ingest: bool
) -> None:
    from genesis.app import evidence_sentences

    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ferries.md").write_text(
        "# Ferry timetable\n\nThe first ferry to Skerry Island leaves at 06:40. "
        "Bicycles travel free on every crossing. Dogs must stay on a lead on deck.\n"
    )
    overrides = {"home": str(home), "knowledge.sentence_vectors_at_ingest": str(at_ingest)}
    async with Genesis.from_config("dev", environ={}, overrides=overrides) as g:
        await g.ingest(docs, "ferries")
        texts = evidence_sentences([c.text for c in await g.kb.all_chunks("ferries")])
        stored = g.text_vectors.store.get_many(texts)
        assert all(v is not None for v in stored) is at_ingest
        assert any(v is not None for v in stored) is at_ingest
        await g.ask("When does the first ferry leave?", agent="support", collection="ferries")
    async with Genesis.from_config("dev", environ={}, overrides=overrides) as g:
        # Whichever way, the sentences an answer weighed are stored for the next process.
        await g.ask("When does the first ferry leave?", agent="support", collection="ferries")
        assert (g.text_vectors.hits > 0, g.text_vectors.misses) == (True, 0)
