"""Keyword and regex rules of agent cards, compiled once."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from genesis.errors import ConfigError
from genesis.router._types import AgentCard

# A pattern is written to capture an intent ("write tests for ..."), a keyword only a topic,
# so a matching pattern counts as much as two keywords.
PATTERN_WEIGHT = 2.0
KEYWORD_WEIGHT = 1.0


@dataclass(frozen=True, slots=True)
class RuleHit:
    """The rules of one agent that matched a task, and their total strength."""

    agent: str
    keywords: tuple[str, ...]
    patterns: tuple[str, ...]

    @property
    def strength(self) -> float:
        return KEYWORD_WEIGHT * len(self.keywords) + PATTERN_WEIGHT * len(self.patterns)

    def describe(self) -> str:
        """``"matched keyword 'refund', pattern '...'"`` for a RouteDecision reason."""
        parts = [f"keyword {k!r}" for k in self.keywords]
        parts += [f"pattern {p!r}" for p in self.patterns]
        return "matched " + ", ".join(parts)


def keyword_regex(keyword: str) -> re.Pattern[str]:
    """A case-insensitive regex for ``keyword`` on word boundaries, any whitespace inside.

    Lookarounds instead of ``\\b`` so keywords that start or end in punctuation ("c++")
    still need a non-word character (or the text's end) beside them.
    """
    words = keyword.strip().split()
    if not words:
        raise ValueError("keyword is empty")
    body = r"\s+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


class CompiledRules:
    """The rules of all cards; :meth:`match` returns the agents whose rules hit a task."""

    def __init__(self, cards: Sequence[AgentCard]) -> None:
        self._rules = [_compile_card(card) for card in cards]

    def match(self, task: str, request: str | None = None) -> list[RuleHit]:
        """Every agent with at least one hit, in card order. Keywords are searched in
        ``request`` (the task without pasted code, when given), patterns in the whole task."""
        words = task if request is None else request
        hits = []
        for agent, keywords, patterns in self._rules:
            kws = tuple(k for k, rx in keywords if rx.search(words))
            pats = tuple(p for p, rx in patterns if rx.search(task))
            if kws or pats:
                hits.append(RuleHit(agent, kws, pats))
        return hits


_Compiled = tuple[str, list[tuple[str, re.Pattern[str]]], list[tuple[str, re.Pattern[str]]]]


def _compile_card(card: AgentCard) -> _Compiled:
    try:
        keywords = [(k, keyword_regex(k)) for k in card.keywords]
    except ValueError as exc:
        raise ConfigError(f"agent card {card.name!r}: keywords: {exc}") from exc
    patterns = []
    for pattern in card.patterns:
        try:
            patterns.append((pattern, re.compile(pattern, re.IGNORECASE | re.MULTILINE)))
        except re.error as exc:
            raise ConfigError(f"agent card {card.name!r}: bad pattern {pattern!r}: {exc}") from exc
    return card.name, keywords, patterns
