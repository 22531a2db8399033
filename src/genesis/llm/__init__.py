"""LLM backends (vLLM token-ID completions, chat API, offline extractive) and the model
registry with retries, circuit breakers and fine-tuned -> baseline fallback."""

from genesis._breaker import BreakerState, KeyedCircuitBreaker
from genesis.llm._extractive import ExtractiveBackend
from genesis.llm._factory import BackendKind, build_backend
from genesis.llm._openai import ChatBackend, CompletionsBackend
from genesis.llm._registry import ModelRegistry, ModelRoute, RegistryResult, reason_code
from genesis.llm._types import (
    Citation,
    Generation,
    GenerationRequest,
    LLMBackend,
    Message,
    Quote,
    Usage,
)

__all__ = [
    "BackendKind",
    "BreakerState",
    "ChatBackend",
    "Citation",
    "CompletionsBackend",
    "ExtractiveBackend",
    "Generation",
    "GenerationRequest",
    "KeyedCircuitBreaker",
    "LLMBackend",
    "Message",
    "Quote",
    "ModelRegistry",
    "ModelRoute",
    "RegistryResult",
    "Usage",
    "build_backend",
    "reason_code",
]
