"""The one exception tree of Genesis.

Every error Genesis raises on purpose derives from :class:`GenesisError`; vendor errors
(httpx, redis, qdrant) are translated where the vendor call is made and chained with
``raise ... from exc``.

::

    GenesisError
    ├── ConfigError
    ├── TokenizerError
    │   └── SegmentBoundaryError
    ├── CacheError
    │   └── CorruptEntryError
    ├── RetrievalError
    │   ├── IngestError
    │   ├── VectorStoreError
    │   └── UnknownCollectionError
    ├── LLMError
    │   ├── LLMTimeoutError
    │   ├── LLMRateLimitError
    │   ├── LLMServerError
    │   ├── LLMBadRequestError
    │   ├── CircuitOpenError
    │   └── AllModelsFailedError
    ├── AgentError
    │   ├── UnknownAgentError
    │   └── SandboxError
    ├── PromptBudgetError
    └── ExecutorClosedError
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "AllModelsFailedError",
    "CacheError",
    "CircuitOpenError",
    "ConfigError",
    "CorruptEntryError",
    "ExecutorClosedError",
    "GenesisError",
    "IngestError",
    "LLMBadRequestError",
    "LLMError",
    "LLMRateLimitError",
    "LLMServerError",
    "LLMTimeoutError",
    "PromptBudgetError",
    "RetrievalError",
    "SegmentBoundaryError",
    "SandboxError",
    "TokenizerError",
    "UnknownAgentError",
    "UnknownCollectionError",
    "VectorStoreError",
]


class GenesisError(Exception):
    """Base of every error Genesis raises on purpose."""


class ConfigError(GenesisError):
    """Configuration is missing, malformed or invalid; the message names the key and file."""


class TokenizerError(GenesisError):
    """A tokenizer could not be loaded or failed to encode/decode."""


class SegmentBoundaryError(TokenizerError):
    """A segment cannot be encoded position-independently (it merges across its boundary)."""


class CacheError(GenesisError):
    """The token cache failed; callers normally never see this (the cache is optional)."""


class CorruptEntryError(CacheError):
    """A cached value is corrupted, truncated, of an unknown format or of another tokenizer."""


class RetrievalError(GenesisError):
    """Ingestion, embedding or search failed."""


class IngestError(RetrievalError):
    """A folder or file could not be ingested."""


class VectorStoreError(RetrievalError):
    """The vector store refused or failed an operation."""


class UnknownCollectionError(RetrievalError):
    """A collection was asked for that holds nothing."""


class LLMError(GenesisError):
    """An LLM backend failed."""


class LLMTimeoutError(LLMError):
    """The LLM call did not finish within its timeout."""


class LLMRateLimitError(LLMError):
    """The LLM server answered 429."""


class LLMServerError(LLMError):
    """The LLM server answered 5xx or an unreadable body."""


class LLMBadRequestError(LLMError):
    """The LLM server answered 4xx (other than 429): retrying will not help."""


class CircuitOpenError(LLMError):
    """The per-model circuit breaker is open; the call was not attempted."""


class AllModelsFailedError(LLMError):
    """The fine-tuned model and the baseline both failed; ``reasons`` says why each did."""

    def __init__(self, message: str, reasons: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reasons = dict(reasons or {})


class AgentError(GenesisError):
    """An agent could not run its task."""


class UnknownAgentError(AgentError):
    """An agent name that is not configured; the message lists the known ones."""


class SandboxError(AgentError):
    """The sandboxed test runner could not run a candidate at all."""


class PromptBudgetError(GenesisError):
    """The fixed parts of a prompt alone exceed the context budget."""


class ExecutorClosedError(GenesisError):
    """CPU work was sent to the executor after its shutdown (the app is closing)."""
