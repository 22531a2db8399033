"""Which other collections a routed question is weighed against."""

from __future__ import annotations

from dataclasses import dataclass

from genesis.router import RouteDecision, answer_alternates


@dataclass(frozen=True)
class _Profile:
    collection: str


PROFILES = {
    "support": _Profile("support"),
    "documentation": _Profile("documentation"),
    "qa": _Profile("qa"),
    "billing": _Profile("support"),  # shares support's collection
}


def test_a_similarity_decision_weighs_the_others_best_scored_first() -> None:
    scores = {"support": 0.5, "documentation": 0.2, "qa": 0.45, "billing": 0.1}
    decision = RouteDecision("support", 0.5, "similarity", "similarity", scores)
    # billing's collection is the chosen one's: weighing it again would change nothing.
    assert answer_alternates(decision, PROFILES) == ["qa", "documentation"]


def test_a_rule_decision_weighs_every_other_collection() -> None:
    decision = RouteDecision("documentation", 1.0, "rule: keyword", "rule", {"documentation": 1})
    assert answer_alternates(decision, PROFILES) == ["support", "qa"]


def test_an_explicit_agent_is_answered_from_its_own_collection_only() -> None:
    decision = RouteDecision("qa", 1.0, "explicit agent", "explicit")
    assert answer_alternates(decision, PROFILES) == []
