"""LLM backends (vLLM token-ID completions, chat API, offline extractive) and the model
registry with retries, circuit breakers and fine-tuned -> baseline fallback.

The HTTP backends are imported on first access: they import httpx (~30 ms, more with the
CLI it pulls in), which the offline extractive default (and every CLI start) should not pay.
"""

from typing import TYPE_CHECKING

from genesis._breaker import (
    BreakerState,
    KeyedCircuitBreaker,
    KeyedRateBreaker,
    RateCircuitBreaker,
)
from genesis._lazy import lazy_exports
from genesis.llm._blocks import BLOCK_SIZE, block_hashes
from genesis.llm._extractive import (
    MATCH,
    RANK_FEATURES,
    RANKER,
    ExtractiveBackend,
    RankedSentence,
    RankWeights,
    Sentence,
    asks_about_code,
    choose_sentences,
    coverage,
    lexical_overlaps,
    rank_sentences,
    sentence_features,
    split_sentences,
    terms,
)
from genesis.llm._factory import BackendKind, build_backend, replica_options
from genesis.llm._registry import (
    KeyedBreaker,
    ModelRegistry,
    ModelRoute,
    RegistryResult,
    reason_code,
)
from genesis.llm._stream import OpenedStream, StreamDelta, StreamingBackend
from genesis.llm._types import (
    Citation,
    Generation,
    GenerationRequest,
    LLMBackend,
    Message,
    Quote,
    Usage,
)

if TYPE_CHECKING:
    from genesis.llm._openai import ChatBackend, CompletionsBackend
    from genesis.llm._replicas import (
        Policy,
        ReplicaRouter,
        ReplicaSpec,
        ReplicatedCompletionsBackend,
    )

__all__ = [
    "BLOCK_SIZE",
    "BackendKind",
    "BreakerState",
    "ChatBackend",
    "Citation",
    "CompletionsBackend",
    "ExtractiveBackend",
    "Generation",
    "GenerationRequest",
    "KeyedBreaker",
    "KeyedCircuitBreaker",
    "KeyedRateBreaker",
    "LLMBackend",
    "Message",
    "ModelRegistry",
    "ModelRoute",
    "OpenedStream",
    "Policy",
    "Quote",
    "RankedSentence",
    "RateCircuitBreaker",
    "RegistryResult",
    "ReplicaRouter",
    "ReplicaSpec",
    "ReplicatedCompletionsBackend",
    "Sentence",
    "StreamDelta",
    "StreamingBackend",
    "Usage",
    "block_hashes",
    "build_backend",
    "MATCH",
    "RANKER",
    "RANK_FEATURES",
    "RankWeights",
    "asks_about_code",
    "choose_sentences",
    "coverage",
    "lexical_overlaps",
    "rank_sentences",
    "sentence_features",
    "reason_code",
    "replica_options",
    "split_sentences",
    "terms",
]


_LAZY = {
    "ChatBackend": "genesis.llm._openai",
    "CompletionsBackend": "genesis.llm._openai",
    "Policy": "genesis.llm._replicas",
    "ReplicaRouter": "genesis.llm._replicas",
    "ReplicaSpec": "genesis.llm._replicas",
    "ReplicatedCompletionsBackend": "genesis.llm._replicas",
}


__getattr__ = lazy_exports(__name__, _LAZY)
