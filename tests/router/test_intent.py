"""The router's intent classifier: trained on labelled requests, cached, off-topic kept."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from router_helpers import bag_of_words

from genesis.errors import ConfigError
from genesis.router import (
    EVIDENCE_MARGIN,
    INTENT_EVIDENCE_MARGIN,
    AgentCard,
    CardEmbeddingCache,
    HALORouter,
)
from genesis.router._intent import (
    BAG_DIM,
    PACKAGED_EXAMPLES,
    IntentClassifier,
    bag_of_terms,
    intent_features,
    load_examples,
)
from genesis.router._request import read_request

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

    def no_training(*args: object, **kwargs: object) -> IntentClassifier:
        raise AssertionError("trained again")

    monkeypatch.setattr(IntentClassifier, "fit", no_training)
    again = _router(EXAMPLES, cache)
    assert again.route(TASK).agent == "qa"
    with pytest.raises(AssertionError, match="trained again"):  # other examples: a new key
        _router([*EXAMPLES, ("tests for invoices", "qa")], cache).warm_up()


def test_weights_cached_by_another_number_of_training_steps_are_not_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = CardEmbeddingCache(tmp_path, "bow")
    _router(EXAMPLES, cache).warm_up()  # trained and cached with this build's steps
    fits: list[int] = []
    fit = IntentClassifier.fit.__func__  # type: ignore[attr-defined]

    def counting(cls: type[IntentClassifier], *args: object, **kwargs: object) -> object:
        fits.append(1)
        return fit(cls, *args, **kwargs)

    monkeypatch.setattr(IntentClassifier, "fit", classmethod(counting))
    _router(EXAMPLES, cache).warm_up()
    assert fits == []  # the same steps: read back
    monkeypatch.setattr("genesis.router._router.STEPS", 10)
    _router(EXAMPLES, cache).warm_up()
    assert fits == [1]  # another fit's weights: trained again


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


def test_the_bag_of_terms_is_a_stable_unit_vector_that_marks_pasted_code() -> None:
    request = "Please review this handler for bugs"
    bag = bag_of_terms(request, False)
    assert bag.shape == (BAG_DIM,) and abs(float(np.linalg.norm(bag)) - 1.0) < 1e-6
    assert np.array_equal(bag, bag_of_terms(request, False))  # CRC-32: no per-run salt
    with_code = bag_of_terms(*read_request(request + "\ndef f(x): return x"))
    assert not np.array_equal(with_code, bag)  # the pasted-code entry
    assert np.count_nonzero(with_code) == np.count_nonzero(bag) + 1
    assert not bag_of_terms("the and of", False).any()  # stop words only: nothing


def test_the_words_route_when_the_embedding_cannot_tell_intents_apart() -> None:
    def same_vector(text: str) -> np.ndarray:  # every text alike: only the words differ
        return np.ones(8, dtype=np.float32)

    router = HALORouter(
        CARDS, embed=same_vector, threshold=0.2, default_agent="billing", examples=EXAMPLES
    )
    assert router.route("write tests for a refund").agent == "qa"
    assert router.route("my refund shows the wrong total").agent == "billing"
    features = intent_features(np.ones(8, dtype=np.float32), bag_of_terms("a b", False))
    assert features.shape == (8 + BAG_DIM,)


def test_with_an_intent_classifier_evidence_decides_only_a_close_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[list[str]] = []

    def evidence(task: str, vector: np.ndarray, agents: Sequence[str]) -> dict[str, float]:
        asked.append(sorted(agents))
        return {"billing": 0.2, "qa": 0.6}  # qa's collection matches far better

    told: dict[str, float] = {}
    monkeypatch.setattr(IntentClassifier, "probabilities", lambda self, features: dict(told))
    router = HALORouter(
        CARDS, embed=bag_of_words, threshold=0.2, default_agent="billing",
        examples=EXAMPLES, evidence=evidence,
    )  # fmt: skip
    # Within INTENT_EVIDENCE_MARGIN: the collections decide.
    told.update(billing=0.505, qa=0.495)
    decision = router.route("invoice refund payment")
    assert (decision.agent, asked) == ("qa", [["billing", "qa"]])
    assert "close call" in decision.reason
    # 0.1 apart: a close call on the cards' scale (EVIDENCE_MARGIN), not on the classifier's.
    asked.clear()
    told.update(billing=0.55, qa=0.45)
    assert INTENT_EVIDENCE_MARGIN < 0.1 < EVIDENCE_MARGIN
    assert (router.route("invoice refund payment").agent, asked) == ("billing", [])


def test_the_bag_columns_multiplied_as_sparse_entries_give_the_dense_weights() -> None:
    rng = np.random.default_rng(7)
    dense = rng.standard_normal((60, 5)).astype(np.float32)
    bags = np.zeros((60, 40), dtype=np.float32)
    for row in bags:
        row[rng.choice(40, 3, replace=False)] = 0.5
    rows = np.hstack([dense, bags])
    labels = [("a", "b", "c")[i % 3] for i in range(60)]
    plain = IntentClassifier.fit(["a", "b", "c"], rows, labels)
    sparse = IntentClassifier.fit(["a", "b", "c"], rows, labels, dense_dims=5)
    assert np.allclose(plain.weights, sparse.weights, atol=1e-6)
    assert np.abs(plain.weights[5:-1]).max() > 0.01  # the bag columns were learned
