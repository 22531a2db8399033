"""The router's card embeddings on disk, and routing that never embeds on the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from router_helpers import bag_of_words

from genesis.router import AgentCard, CardEmbeddingCache, HALORouter

CARDS = [
    AgentCard("billing", "money invoices refunds charges", keywords=["refund", "invoice"]),
    AgentCard("weather", "rain sun forecast clouds", patterns=[r"\bwill it (rain|snow)\b"]),
    AgentCard("cooking", "recipes pasta soup bake oven", keywords=["recipe", "bake"]),
]


class CountingEmbedder:
    """bag_of_words, counting every text it embeds and the thread it ran on."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.threads: set[int] = set()

    def __call__(self, text: str) -> np.ndarray:
        self.texts.append(text)
        self.threads.add(threading.get_ident())
        return bag_of_words(text)

    def batch(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self(t) for t in texts])


def cached_router(
    folder: Path, embed: CountingEmbedder, cards: Sequence[AgentCard] = CARDS, fp: str = "m1"
) -> HALORouter:
    return HALORouter(
        cards,
        embed=embed,
        embed_batch=embed.batch,
        card_cache=CardEmbeddingCache(folder, fp),
        threshold=0.3,
        default_agent="billing",
    )


def test_card_embeddings_on_disk_are_reused_by_a_second_router(tmp_path: Path) -> None:
    first = CountingEmbedder()
    cached_router(tmp_path, first).warm_up()
    assert len(first.texts) == len(CARDS)
    second = CountingEmbedder()
    router = cached_router(tmp_path, second)
    router.warm_up()
    assert second.texts == []
    decision = router.route("sun and clouds in the forecast")
    assert (decision.agent, decision.method) == ("weather", "similarity")
    assert second.texts == ["sun and clouds in the forecast"]


def test_a_changed_card_text_rebuilds_the_cache(tmp_path: Path) -> None:
    cached_router(tmp_path, CountingEmbedder()).warm_up()
    changed = [*CARDS[:2], AgentCard("cooking", "recipes pasta soup bake oven grill")]
    again = CountingEmbedder()
    cached_router(tmp_path, again, changed).warm_up()
    assert again.texts == [c.description for c in changed]
    assert len(list(tmp_path.glob("cards-*.npy"))) == 2


def test_another_embedder_fingerprint_rebuilds_the_cache(tmp_path: Path) -> None:
    cached_router(tmp_path, CountingEmbedder(), fp="m1").warm_up()
    other = CountingEmbedder()
    cached_router(tmp_path, other, fp="m2").warm_up()
    assert len(other.texts) == len(CARDS)


def test_an_unreadable_cache_file_is_re_embedded_and_rewritten(tmp_path: Path) -> None:
    cached_router(tmp_path, CountingEmbedder()).warm_up()
    (path,) = tmp_path.glob("cards-*.npy")
    path.write_bytes(b"not a numpy file")
    again = CountingEmbedder()
    cached_router(tmp_path, again).warm_up()
    assert len(again.texts) == len(CARDS)
    third = CountingEmbedder()
    cached_router(tmp_path, third).warm_up()
    assert third.texts == []


def test_cached_and_fresh_routers_decide_alike(tmp_path: Path) -> None:
    cached_router(tmp_path, CountingEmbedder()).warm_up()
    warm = cached_router(tmp_path, CountingEmbedder())
    fresh = HALORouter(CARDS, embed=bag_of_words, threshold=0.3, default_agent="billing")
    for task in ("sun and clouds", "refund of a recipe with pasta soup", "quantum lecture"):
        assert warm.route(task).scores == pytest.approx(fresh.route(task).scores)


async def test_route_async_embeds_through_the_injected_coroutine(tmp_path: Path) -> None:
    sync_embed = CountingEmbedder()
    asked: list[str] = []

    async def embed_async(text: str) -> np.ndarray:
        asked.append(text)
        return bag_of_words(text)

    router = HALORouter(
        CARDS, embed=sync_embed, embed_async=embed_async, threshold=0.3, default_agent="billing"
    )
    router.warm_up()
    cards_only = list(sync_embed.texts)
    decision = await router.route_async("sun and clouds in the forecast")
    assert (decision.agent, decision.method) == ("weather", "similarity")
    assert asked == ["sun and clouds in the forecast"]
    assert sync_embed.texts == cards_only
    assert (await router.route_async("Will it rain on Sunday?")).method == "rule"
    assert asked == ["sun and clouds in the forecast"]  # a clear pattern hit needs no vector
    # A keyword names a topic only: it is weighed against similarity, so the task is embedded
    # (changed on purpose: a lone keyword used to decide without looking at the text).
    assert (await router.route_async("I want a refund")).method == "rule"
    assert asked[-1] == "I want a refund"


async def test_route_async_without_a_coroutine_embeds_off_the_loop() -> None:
    embed = CountingEmbedder()
    router = HALORouter(CARDS, embed=embed, threshold=0.3, default_agent="billing")
    decision = await router.route_async("refund of a recipe with pasta soup and oven")
    assert (decision.agent, decision.method) == ("cooking", "rule")
    assert threading.get_ident() not in embed.threads
    assert router.warmed_up


async def test_route_async_matches_route() -> None:
    router = HALORouter(CARDS, embed=bag_of_words, threshold=0.3, default_agent="billing")
    for task in ("sun and clouds", "Will it rain?", "quantum lecture", "bake a refund"):
        got = await router.route_async(task)
        assert (got.agent, got.method, got.reason) == (
            (want := router.route(task)).agent,
            want.method,
            want.reason,
        )
    assert (await router.route_async("x", agent="weather")).method == "explicit"


def test_route_async_from_a_plain_thread() -> None:
    router = HALORouter(CARDS, embed=bag_of_words, threshold=0.3, default_agent="billing")
    assert asyncio.run(router.route_async("sun and clouds")).agent == "weather"
