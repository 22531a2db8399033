"""HALO routing of a task to an agent: explicit name, then rules, then embedding similarity."""

from genesis.router._card_cache import CardEmbeddingCache
from genesis.router._cards import cards_from_profiles, default_cards
from genesis.router._router import (
    DEFAULT_THRESHOLD,
    AsyncEmbedFn,
    ChatRegistry,
    EmbedBatchFn,
    EmbedFn,
    HALORouter,
)
from genesis.router._rules import keyword_regex
from genesis.router._types import AgentCard, RouteDecision, RouteMethod

__all__ = [
    "DEFAULT_THRESHOLD",
    "AgentCard",
    "AsyncEmbedFn",
    "CardEmbeddingCache",
    "ChatRegistry",
    "EmbedBatchFn",
    "EmbedFn",
    "HALORouter",
    "RouteDecision",
    "RouteMethod",
    "cards_from_profiles",
    "default_cards",
    "keyword_regex",
]
