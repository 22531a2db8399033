"""HALO routing of a task to an agent: explicit name, then rules, then embedding similarity."""

from genesis.router._alternates import answer_alternates
from genesis.router._card_cache import CardEmbeddingCache
from genesis.router._cards import cards_from_profiles, default_cards
from genesis.router._router import (
    DEFAULT_THRESHOLD,
    EVIDENCE_MARGIN,
    EVIDENCE_WEIGHT,
    INTENT_EVIDENCE_MARGIN,
    INTENT_EVIDENCE_WEIGHT,
    KEYWORD_BONUS,
    OFF_TOPIC_EVIDENCE,
    AsyncEmbedFn,
    ChatRegistry,
    EmbedBatchFn,
    EmbedFn,
    EvidenceFn,
    HALORouter,
)
from genesis.router._rules import keyword_regex
from genesis.router._types import AgentCard, RouteDecision, RouteMethod

__all__ = [
    "answer_alternates",
    "DEFAULT_THRESHOLD",
    "EVIDENCE_MARGIN",
    "EVIDENCE_WEIGHT",
    "INTENT_EVIDENCE_MARGIN",
    "INTENT_EVIDENCE_WEIGHT",
    "KEYWORD_BONUS",
    "OFF_TOPIC_EVIDENCE",
    "AgentCard",
    "AsyncEmbedFn",
    "CardEmbeddingCache",
    "ChatRegistry",
    "EmbedBatchFn",
    "EmbedFn",
    "EvidenceFn",
    "HALORouter",
    "RouteDecision",
    "RouteMethod",
    "cards_from_profiles",
    "default_cards",
    "keyword_regex",
]
