"""Card rules are matched through one alternation per card: the same hits as rule by rule."""

from __future__ import annotations

import re

import pytest

from genesis.config import load_settings
from genesis.router import AgentCard, cards_from_profiles
from genesis.router._intent import PACKAGED_EXAMPLES, load_examples
from genesis.router._rules import CompiledRules, RuleHit, keyword_regex


def one_by_one(cards: list[AgentCard], task: str, request: str) -> list[RuleHit]:
    """The hits as every rule alone finds them (what the joined expressions must equal)."""
    hits = []
    for card in cards:
        kws = tuple(k for k in card.keywords if keyword_regex(k).search(request))
        flags = re.IGNORECASE | re.MULTILINE
        pats = tuple(p for p in card.patterns if re.search(p, task, flags))
        if kws or pats:
            hits.append(RuleHit(card.name, kws, pats))
    return hits


def test_the_default_cards_hit_the_labelled_tasks_as_rule_by_rule() -> None:
    settings = load_settings("dev", environ={})
    cards = cards_from_profiles(settings.agents.values())
    rules = CompiledRules(cards)
    tasks = [task for task, _ in load_examples(PACKAGED_EXAMPLES, list(settings.agents))]
    hit = 0
    for task in tasks:
        found = rules.match(task, task)
        assert found == one_by_one(cards, task, task), task
        hit += bool(found)
    assert 0 < hit < len(tasks)  # some tasks hit rules, some do not: both paths ran


@pytest.mark.parametrize(
    "pattern",
    # Cannot be joined safely: group references, and a pattern's own global flags.
    [r"\b(\w+) \1\b", r"(?P<w>\w+) (?P=w)", r"(s)?(?(1)ame) same", r"(?i)SAME SAME"],
)
def test_a_pattern_that_cannot_be_joined_is_still_matched_alone(pattern: str) -> None:
    card = AgentCard("echo", "repeats", keywords=["twice"], patterns=[r"\bonce\b", pattern])
    rules = CompiledRules([card])
    assert rules.match("same same") == [RuleHit("echo", (), (pattern,))]
    assert rules.match("once and twice") == [RuleHit("echo", ("twice",), (r"\bonce\b",))]
    assert rules.match("nothing here") == []
