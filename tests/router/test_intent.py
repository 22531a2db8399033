"""The router's intent classifier: trained on labelled requests, cached, off-topic kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from router_helpers import bag_of_words

from genesis.errors import ConfigError
from genesis.router import AgentCard, CardEmbeddingCache, HALORouter
from genesis.router._intent import PACKAGED_EXAMPLES, IntentClassifier, load_examples

# The cards describe topics; the examples teach the intents: asking for tests of an invoice
# feature is qa's work, though every word of it is billing's topic.
CARDS = [
    AgentCard("billing", "invoice invoices refund payment charged card billing"),
    AgentCard("qa", "quality assurance"),
]
EXAMPLES = [
    ("write tests for the invoice totals", "qa"),
    ("write tests for refund payment rounding", "qa"),
    ("tests for the card billing retries please", "qa"),
    ("what tests should cover a charged card", "qa"),
    ("my invoice shows the wrong total", "billing"),
    ("I was charged twice on my card", "billing"),
    ("where is my refund", "billing"),
    ("the payment failed on my invoice", "billing"),
]
TASK = "write tests for invoice refund payment"


def _router(examples: list[tuple[str, str]], cache: CardEmbeddingCache | None = None) -> HALORouter:
    return HALORouter(
        CARDS, embed=bag_of_words, threshold=0.2, default_agent="billing",
        examples=examples, card_cache=cache,
    )  # fmt: skip


def test_examples_teach_the_intent_the_cards_miss() -> None:
    assert _router([]).route(TASK).agent == "billing"  # the topic, by card similarity
    decision = _router(EXAMPLES).route(TASK)
    assert decision.agent == "qa"
    assert decision.reason.startswith("intent ")


def test_a_request_far_from_every_card_still_goes_to_the_default_agent() -> None:
    decision = _router(EXAMPLES).route("zebra giraffe savanna")
    assert (decision.agent, decision.method) == ("billing", "default")


def test_the_trained_weights_are_cached_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = CardEmbeddingCache(tmp_path, "bow")
    first = _router(EXAMPLES, cache)
    first.warm_up()

    def no_training(*args: object) -> IntentClassifier:
        raise AssertionError("trained again")

    monkeypatch.setattr(IntentClassifier, "fit", no_training)
    again = _router(EXAMPLES, cache)
    assert again.route(TASK).agent == "qa"
    with pytest.raises(AssertionError, match="trained again"):  # other examples: a new key
        _router([*EXAMPLES, ("tests for invoices", "qa")], cache).warm_up()


def test_examples_are_read_for_the_configured_agents_and_bad_lines_named(tmp_path: Path) -> None:
    path = tmp_path / "ex.jsonl"
    lines = [
        {"task": "a", "agent": "qa"},
        {"task": "b", "agent": "gone"},
        {"task": " ", "agent": "qa"},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert load_examples(path, ["qa", "billing"]) == [("a", "qa")]
    path.write_text('{"task": "a", "agent": "qa"}\nnot json\n')
    with pytest.raises(ConfigError, match=r"ex.jsonl:2"):
        load_examples(path, ["qa"])
    with pytest.raises(ConfigError, match="cannot read"):
        load_examples(tmp_path / "missing.jsonl", ["qa"])


def test_the_packaged_examples_cover_every_default_agent() -> None:
    from genesis.config import load_settings

    agents = list(load_settings("dev", environ={}).agents)
    examples = load_examples(PACKAGED_EXAMPLES, agents)
    assert {agent for _, agent in examples} == set(agents)
    assert len(examples) >= 600
