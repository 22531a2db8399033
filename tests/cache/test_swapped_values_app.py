"""Issue 7 item 4 through the whole app: values of a collection's keys rotated among each
other in the real Redis; a fresh `Genesis` asks again and assembles the same prompt IDs,
counting the swapped entries and rewriting each under its own key."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from genesis.app import Genesis
from genesis.tokens import unpack_ids

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUESTION = "How do I rotate an API key?"
REDIS_URL = "redis://127.0.0.1:6379/0"

Generate = Callable[[Any], Awaitable[Any]]


def _capturing(generate: Generate, into: list[list[int]]) -> Generate:
    async def run(request: Any) -> Any:
        into.append([int(i) for i in request.prompt_ids])
        return await generate(request)

    return run


async def _ask(home: Path, prefix: str) -> tuple[list[int], Any, Genesis]:
    """One fresh app (empty L1) on the shared Redis: the prompt IDs it sends, its answer."""
    overrides = {"home": str(home), "redis.url": REDIS_URL, "cache.prefix": prefix}
    app = Genesis.from_config("dev", environ={}, overrides=overrides)
    await app.warm_up()
    rag = app.agents["support"].rag
    prompts: list[list[int]] = []
    answer = await rag.answer(QUESTION, "support", generate=_capturing(rag.generator, prompts))
    await app.token_cache.flush()
    return prompts[0], answer, app


async def test_a_fresh_app_serves_the_same_prompt_ids_after_values_are_swapped(
    demo_home: Path, redis_client: aioredis.Redis
) -> None:
    prefix = f"gtsw{uuid.uuid4().hex[:10]}"
    before, first, app = await _ask(demo_home, prefix)
    await app.aclose()
    keys = sorted([k async for k in redis_client.scan_iter(match=f"{prefix}:support:*")])
    assert len(keys) >= 2 and first.usage.chunks_in_prompt == len(keys)
    values = [await redis_client.get(k) for k in keys]
    try:
        for key, value in zip(keys, values[1:] + values[:1], strict=True):
            await redis_client.set(key, value)  # each key now holds a neighbour's valid value

        after, second, app = await _ask(demo_home, prefix)
        swapped = app.token_cache.stats().corrupt
        vocab = app.token_cache.tokenizer.vocab_size
        await app.aclose()
        assert after == before
        assert swapped == len(keys) and second.cache_tiers == {"miss": len(keys)}
        for key in keys:  # rewritten: each value now decodes under its own key
            stored = await redis_client.get(key)
            assert stored is not None
            unpack_ids(stored, key=key.decode(), vocab_size=vocab)
    finally:
        await redis_client.delete(*keys)
