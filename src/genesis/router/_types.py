"""Agent cards (what the router knows of an agent) and route decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RouteMethod = Literal["explicit", "rule", "similarity", "default"]


@dataclass(slots=True)
class AgentCard:
    """What the router knows of one agent, built from the agent's profile.

    ``keywords`` match case-insensitively on word boundaries; ``patterns`` are regular
    expressions searched case-insensitively; ``examples`` are typical task phrasings that are
    embedded (with ``description``) once, at :meth:`HALORouter.warm_up`.
    """

    name: str
    description: str
    keywords: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    def texts(self) -> list[str]:
        """The texts embedded for similarity routing: the description, then each example."""
        return [self.description, *self.examples]


@dataclass(slots=True)
class RouteDecision:
    """Which agent takes a task, how sure the router is, and why.

    ``scores`` holds what the deciding method measured per agent: rule strength for
    ``"rule"``, cosine similarity for ``"similarity"`` and ``"default"``; empty for
    ``"explicit"``.
    """

    agent: str
    confidence: float
    reason: str
    method: RouteMethod
    scores: dict[str, float] = field(default_factory=dict)
