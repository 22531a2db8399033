"""HALO routing of a task to an agent: explicit name, then rules, then embedding similarity."""

from genesis.router._defaults import DEFAULT_AGENT_CARDS
from genesis.router._router import DEFAULT_THRESHOLD, ChatRegistry, EmbedFn, HALORouter
from genesis.router._rules import keyword_regex
from genesis.router._types import AgentCard, RouteDecision, RouteMethod

__all__ = [
    "DEFAULT_AGENT_CARDS",
    "DEFAULT_THRESHOLD",
    "AgentCard",
    "ChatRegistry",
    "EmbedFn",
    "HALORouter",
    "RouteDecision",
    "RouteMethod",
    "keyword_regex",
]
