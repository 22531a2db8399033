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
_PATTERN_FLAGS = re.IGNORECASE | re.MULTILINE


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
    return re.compile(rf"(?<!\w){_keyword_body(keyword)}(?!\w)", re.IGNORECASE)


def _keyword_body(keyword: str) -> str:
    words = keyword.strip().split()
    if not words:
        raise ValueError("keyword is empty")
    return r"\s+".join(re.escape(w) for w in words)


def _keywords_joined(keywords: Sequence[str]) -> re.Pattern[str] | None:
    """One expression for all ``keywords``, the lookarounds outside the alternation (tried
    once per position, not once per keyword: about ten times faster than joining the
    keywords' own expressions)."""
    if not keywords:
        return None
    bodies = "|".join(_keyword_body(k) for k in keywords)
    return re.compile(rf"(?<!\w)(?:{bodies})(?!\w)", re.IGNORECASE)


class CompiledRules:
    """The rules of all cards; :meth:`match` returns the agents whose rules hit a task.

    Each card's keywords, and its patterns, are also joined into one alternation: a task
    that the joined expression does not match matches none of them, so most tasks are read
    once per card instead of once per rule (the six default cards hold 81 keywords and 28
    patterns; a question is read on the event loop, see ``INLINE_READ_CHARS``). Only on a
    hit are the card's rules tried one by one, to name them.
    """

    def __init__(self, cards: Sequence[AgentCard]) -> None:
        self._rules = [_compile_card(card) for card in cards]

    def match(self, task: str, request: str | None = None) -> list[RuleHit]:
        """Every agent with at least one hit, in card order. Keywords are searched in
        ``request`` (the task without pasted code, when given), patterns in the whole task."""
        words = task if request is None else request
        hits = []
        for rules in self._rules:
            kws = rules.keywords.hits(words)
            pats = rules.patterns.hits(task)
            if kws or pats:
                hits.append(RuleHit(rules.agent, kws, pats))
        return hits


@dataclass(frozen=True, slots=True)
class _RuleSet:
    """Named regexes and, when they can be joined, one alternation of them all."""

    rules: tuple[tuple[str, re.Pattern[str]], ...]
    joined: re.Pattern[str] | None

    def hits(self, text: str) -> tuple[str, ...]:
        if not self.rules or (self.joined is not None and not self.joined.search(text)):
            return ()
        return tuple(name for name, rx in self.rules if rx.search(text))


@dataclass(frozen=True, slots=True)
class _CardRules:
    agent: str
    keywords: _RuleSet
    patterns: _RuleSet


# A reference to a group, by number or name (a back-reference, a conditional), would point
# elsewhere once patterns are joined.
_BACKREFERENCE = re.compile(r"\\[1-9]|\(\?P=|\(\?\(")


def _rule_set(rules: Sequence[tuple[str, re.Pattern[str]]], flags: int) -> _RuleSet:
    """``rules`` with their alternation (None when one of them cannot be joined safely)."""
    joined: re.Pattern[str] | None = None
    sources = [rx.pattern for _, rx in rules]
    if sources and not any(_BACKREFERENCE.search(src) for src in sources):
        try:
            joined = re.compile("|".join(f"(?:{src})" for src in sources), flags)
        except re.error:  # a pattern with its own global flags, duplicate group names
            joined = None
    return _RuleSet(tuple(rules), joined)


def _compile_card(card: AgentCard) -> _CardRules:
    try:
        keywords = [(k, keyword_regex(k)) for k in card.keywords]
    except ValueError as exc:
        raise ConfigError(f"agent card {card.name!r}: keywords: {exc}") from exc
    patterns = []
    for pattern in card.patterns:
        try:
            patterns.append((pattern, re.compile(pattern, _PATTERN_FLAGS)))
        except re.error as exc:
            raise ConfigError(f"agent card {card.name!r}: bad pattern {pattern!r}: {exc}") from exc
    joined = _keywords_joined(card.keywords)
    return _CardRules(
        card.name, _RuleSet(tuple(keywords), joined), _rule_set(patterns, _PATTERN_FLAGS)
    )
