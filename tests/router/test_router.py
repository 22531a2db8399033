"""HALO router: explicit > rules > similarity > default, validation, registry delegation."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from router_helpers import bag_of_words

from genesis.errors import AgentError, ConfigError, UnknownAgentError
from genesis.llm import Message
from genesis.router import AgentCard, HALORouter, default_cards, keyword_regex

DEFAULT_AGENT_CARDS = default_cards()

TASKS_FILE = Path(__file__).with_name("labelled_tasks.jsonl")
Embed = Callable[[str], np.ndarray]


CARDS = [
    AgentCard("billing", "money invoices refunds charges", keywords=["refund", "invoice"]),
    AgentCard("weather", "rain sun forecast clouds", patterns=[r"\bwill it (rain|snow)\b"]),
    AgentCard("cooking", "recipes pasta soup bake oven", keywords=["recipe", "bake"]),
]


def make_router(embed: Embed | None = bag_of_words, **kwargs: Any) -> HALORouter:
    options: dict[str, Any] = {"threshold": 0.3, "default_agent": "billing", **kwargs}
    return HALORouter(CARDS, embed=embed, **options)


def test_explicit_agent_wins_over_rules() -> None:
    decision = make_router().route("please refund me", agent="cooking")
    assert (decision.agent, decision.method, decision.confidence) == ("cooking", "explicit", 1.0)
    assert decision.reason == "explicit agent"


def test_unknown_explicit_agent_lists_the_known_ones() -> None:
    with pytest.raises(UnknownAgentError, match="'gardening'.*billing, weather, cooking"):
        make_router().route("anything", agent="gardening")


@pytest.mark.parametrize("task", ["", "   \n"])
def test_empty_task_is_refused(task: str) -> None:
    with pytest.raises(AgentError, match="empty task"):
        make_router().route(task)


def test_keyword_rule_matches_case_insensitively_on_word_boundaries() -> None:
    decision = make_router().route("I want a REFUND now")
    assert (decision.agent, decision.method) == ("billing", "rule")
    assert decision.reason == "rule: matched keyword 'refund'"
    assert make_router(embed=None).route("refunding soup pots").method == "default"


def test_keyword_regex_handles_spacing_and_punctuation() -> None:
    assert keyword_regex("go to market").search("our GO  TO\nmarket plan")
    assert keyword_regex("c++").search("review my c++ code")
    assert not keyword_regex("pr").search("print this")


def test_pattern_rule_matches() -> None:
    decision = make_router().route("Will it rain on Sunday?")
    assert (decision.agent, decision.method) == ("weather", "rule")
    assert "pattern" in decision.reason


def test_most_rule_matches_win() -> None:
    decision = make_router().route("bake a recipe for my refund party")
    assert decision.agent == "cooking"
    assert decision.scores == {"billing": 1.0, "cooking": 2.0}
    assert decision.confidence == pytest.approx(2 / 3)


def test_tied_rules_are_broken_by_similarity() -> None:
    # One keyword each; the rest of the text is about cooking.
    decision = make_router().route("refund of a recipe with pasta soup and oven")
    assert (decision.agent, decision.method) == ("cooking", "rule")
    assert "tied with billing" in decision.reason


def test_similarity_routes_without_rules() -> None:
    decision = make_router().route("sun and clouds in the forecast")
    assert (decision.agent, decision.method) == ("weather", "similarity")
    assert decision.reason.startswith("similarity ") and "'weather'" in decision.reason
    assert set(decision.scores) == {"billing", "weather", "cooking"}
    assert 0.3 <= decision.confidence <= 1.0


def test_low_similarity_falls_back_to_the_default_agent() -> None:
    decision = make_router().route("quantum chromodynamics lecture")
    assert (decision.agent, decision.method, decision.confidence) == ("billing", "default", 0.0)
    assert re.fullmatch(
        r"default: best similarity -?\d\.\d\d below threshold 0\.30 \(best was '\w+'\)",
        decision.reason,
    )


def test_without_embedder_unmatched_tasks_go_to_default() -> None:
    decision = make_router(embed=None).route("sun and clouds")
    assert (decision.agent, decision.method) == ("billing", "default")
    assert "no embedder" in decision.reason


def test_card_texts_are_embedded_once() -> None:
    calls: list[str] = []

    def counting(text: str) -> np.ndarray:
        calls.append(text)
        return bag_of_words(text)

    router = make_router(embed=counting)
    router.warm_up()
    router.warm_up()
    assert len(calls) == len(CARDS)  # one description each, no examples
    router.route("sun")
    router.route("soup")
    assert len(calls) == len(CARDS) + 2


def test_default_agent_must_be_a_card() -> None:
    with pytest.raises(ConfigError, match="default_agent 'support' is not among"):
        make_router(default_agent="support")


def test_duplicate_card_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="duplicate agent card names: billing"):
        HALORouter([*CARDS, AgentCard("billing", "x")], default_agent="billing")


def test_bad_pattern_is_refused_with_its_card() -> None:
    card = AgentCard("broken", "x", patterns=["(unclosed"])
    with pytest.raises(ConfigError, match=r"'broken': bad pattern '\(unclosed'"):
        HALORouter([card], default_agent="broken")


def test_zero_vector_from_embedder_is_an_error() -> None:
    router = make_router(embed=lambda text: np.zeros(8, dtype=np.float32))
    with pytest.raises(AgentError, match="zero vector"):
        router.route("sun")


class FakeRegistry:
    """Records chat calls like genesis.llm.ModelRegistry.chat_async would receive them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Message], bool, bool]] = []

    async def chat_async(
        self,
        agent: str,
        messages: Sequence[Message],
        *,
        use_finetuned: bool = True,
        use_fallback: bool = True,
    ) -> str:
        self.calls.append((agent, list(messages), use_finetuned, use_fallback))
        return f"answer from {agent}"


MESSAGES = [Message("user", "hello")]


async def test_execute_goes_through_the_registry() -> None:
    registry = FakeRegistry()
    router = make_router(registry=registry)
    result = await router.execute_with_finetuned_model_async(
        "cooking", MESSAGES, use_fallback=False
    )
    assert result == "answer from cooking"
    assert registry.calls == [("cooking", MESSAGES, True, False)]


def test_sync_execute_delegates_to_the_async_one() -> None:
    registry = FakeRegistry()
    router = make_router(registry=registry)
    assert router.execute_with_finetuned_model("weather", MESSAGES, False) == "answer from weather"
    assert registry.calls == [("weather", MESSAGES, False, True)]


async def test_sync_execute_refuses_inside_a_running_loop() -> None:
    router = make_router(registry=FakeRegistry())
    with pytest.raises(RuntimeError, match="await execute_with_finetuned_model_async"):
        router.execute_with_finetuned_model("weather", MESSAGES)


def test_execute_without_registry_is_a_clear_error() -> None:
    with pytest.raises(AgentError, match="no model registry"):
        make_router().execute_with_finetuned_model("weather", MESSAGES)


def test_execute_refuses_unknown_agents() -> None:
    router = make_router(registry=FakeRegistry())
    with pytest.raises(UnknownAgentError, match="known agents"):
        asyncio.run(router.execute_with_finetuned_model_async("nobody", MESSAGES))


def load_tasks() -> list[dict[str, str]]:
    lines = TASKS_FILE.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_labelled_tasks_cover_every_default_agent() -> None:
    counts: dict[str, int] = {}
    for item in load_tasks():
        counts[item["agent"]] = counts.get(item["agent"], 0) + 1
    assert counts == {card.name: 12 for card in DEFAULT_AGENT_CARDS}


def test_default_cards_do_not_copy_labelled_tasks() -> None:
    examples = {e.lower() for card in DEFAULT_AGENT_CARDS for e in card.examples}
    assert not examples & {item["task"].lower() for item in load_tasks()}


@pytest.fixture(scope="module")
def minilm_embed() -> Embed:
    """The production embedder (NumPy MiniLM), loaded once for the module."""
    from genesis.knowledge import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    embedder.warm_up()
    return embedder.embed_query


@pytest.fixture(scope="module")
def default_router(minilm_embed: Embed) -> HALORouter:
    router = HALORouter(DEFAULT_AGENT_CARDS, embed=minilm_embed, default_agent="support")
    router.warm_up()
    return router


@pytest.mark.slow
def test_default_cards_route_labelled_tasks_accurately(default_router: HALORouter) -> None:
    tasks = load_tasks()
    misses = [t for t in tasks if default_router.route(t["task"]).agent != t["agent"]]
    accuracy = 1 - len(misses) / len(tasks)
    assert accuracy >= 0.90, f"accuracy {accuracy:.3f}; misses: {misses}"


@pytest.mark.slow
def test_off_topic_task_goes_to_the_default_agent(default_router: HALORouter) -> None:
    decision = default_router.route("What is the capital of Australia?")
    assert (decision.agent, decision.method) == ("support", "default")


@pytest.mark.slow
def test_keywordless_task_is_routed_by_meaning(default_router: HALORouter) -> None:
    decision = default_router.route("I'd like to open a small bakery, who would my customers be?")
    assert decision.agent == "business_generation"


def test_a_failed_warm_up_leaves_the_router_usable() -> None:
    calls = {"n": 0}

    def flaky(text: str) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("embedder hiccup")
        vec = np.zeros(8, np.float32)
        vec[hash(text) % 8] = 1.0
        return vec

    cards = [
        AgentCard("a", "alpha things", examples=["first example"]),
        AgentCard("b", "beta things", examples=["second example"]),
    ]
    router = HALORouter(cards, embed=flaky, threshold=0.0, default_agent="a")
    with pytest.raises(RuntimeError):
        router.warm_up()
    router.warm_up()
    assert router.route("anything at all").agent in {"a", "b"}


def test_a_task_that_is_not_text_is_refused_by_name() -> None:
    router = HALORouter([AgentCard("a", "alpha")], default_agent="a")
    with pytest.raises(AgentError, match="must be text, not int"):
        router.route(123)  # type: ignore[arg-type]


def test_pasted_code_does_not_decide_the_similarity() -> None:
    # The code names billing words; the request around it is about cooking.
    task = "soup pasta oven please, see this:\nx = money(charges, refunds)\nreturn invoices"
    decision = make_router(threshold=0.1).route(task)
    assert (decision.agent, decision.method) == ("cooking", "similarity")


@pytest.mark.slow
@pytest.mark.parametrize(
    "task",
    [
        "What should I assert to check that an idempotency key replays the first response?",
        "Which tests should we write for the webhook endpoint?",
        "There are no tests for the pagination cursor yet; cover it",
        "Which inputs should a test of the webhook retry schedule check?",
    ],
)
def test_asking_for_tests_about_an_api_topic_goes_to_qa(
    default_router: HALORouter, task: str
) -> None:
    # The documentation keywords in these tasks name the topic, not the request.
    assert default_router.route(task).agent == "qa"


@pytest.mark.slow
@pytest.mark.parametrize(
    "task",
    [
        "Please read through this method: it retries forever when the refund call fails",
        "Look at my loop that pages through invoices for an off-by-one",
        "This handler fetches each customer's invoices one by one, is that a problem?",
        "Should it raise KeyError when the invoice is missing, or fall back to a default?",
    ],
)
def test_asking_about_given_code_goes_to_code_review(default_router: HALORouter, task: str) -> None:
    # Product words (refund, invoices, customer) name what the code touches, not the request.
    assert default_router.route(task).agent == "code_review"


def test_keywords_in_pasted_code_do_not_count() -> None:
    # "refund" and "invoice" are billing keywords, but here only identifiers in the code.
    task = "soup pasta oven please, see this:\nx = refund(invoice)\nreturn x"
    decision = make_router(threshold=0.1).route(task)
    assert (decision.agent, decision.method) == ("cooking", "similarity")
    assert "keywords" not in decision.reason


async def test_a_long_task_is_read_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from genesis.router import _router

    loop_thread = threading.get_ident()
    read_in: list[bool] = []
    r = HALORouter(CARDS, embed=bag_of_words, default_agent="billing")
    read = r._read

    def spy(task: str):  # type: ignore[no-untyped-def]
        read_in.append(threading.get_ident() == loop_thread)
        return read(task)

    monkeypatch.setattr(r, "_read", spy)
    await r.route_async("refund my invoice please")
    await r.route_async("refund my invoice please " * (_router.INLINE_READ_CHARS // 10))
    assert read_in == [True, False]  # the short one inline, the long one in a worker thread
