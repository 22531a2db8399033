"""The one exception tree of Genesis.

Every error Genesis raises on purpose derives from :class:`GenesisError`; vendor errors
(httpx, redis, qdrant) are translated where the vendor call is made and chained with
``raise ... from exc``.

::

    GenesisError
    ├── ConfigError
    ├── AuthError
    │   ├── AuthenticationError
    │   └── PermissionDeniedError
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
    ├── RolloutError
    ├── ExecutorClosedError
    ├── NotWarmedUpError
    ├── SessionError
    │   └── UnknownSessionError
    └── ServiceError
        ├── RequestTooLargeError
        ├── OverloadedError
        ├── FeatureDisabledError
        └── RateLimitExceededError
"""

from __future__ import annotations

import math

__all__ = [
    "AgentError",
    "AllModelsFailedError",
    "AuthError",
    "AuthenticationError",
    "CacheError",
    "CircuitOpenError",
    "ConfigError",
    "CorruptEntryError",
    "ExecutorClosedError",
    "FeatureDisabledError",
    "GenesisError",
    "IngestError",
    "LLMBadRequestError",
    "LLMError",
    "LLMRateLimitError",
    "LLMServerError",
    "LLMTimeoutError",
    "NotWarmedUpError",
    "OverloadedError",
    "PermissionDeniedError",
    "PromptBudgetError",
    "RateLimitExceededError",
    "RequestTooLargeError",
    "RetrievalError",
    "RolloutError",
    "SandboxError",
    "SegmentBoundaryError",
    "ServiceError",
    "SessionError",
    "TokenizerError",
    "UnknownAgentError",
    "UnknownCollectionError",
    "UnknownSessionError",
    "VectorStoreError",
]


class GenesisError(Exception):
    """Base of every error Genesis raises on purpose."""


class ConfigError(GenesisError):
    """Configuration is missing, malformed or invalid; the message names the key and file."""


class AuthError(GenesisError):
    """A client request was refused by authentication or authorization; the message never
    holds the presented key."""


class AuthenticationError(AuthError):
    """No key, a malformed ``Authorization`` header or an unknown key (HTTP 401)."""

    status_code = 401

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="genesis"'}


class PermissionDeniedError(AuthError):
    """A valid key without the scope the route needs (HTTP 403); ``scope`` names it."""

    status_code = 403

    def __init__(self, message: str, scope: str = "") -> None:
        super().__init__(message)
        self.scope = scope

    @property
    def headers(self) -> dict[str, str]:
        # RFC 6750 section 3.1: the challenge names the scope that was missing.
        return {
            "WWW-Authenticate": (
                f'Bearer realm="genesis", error="insufficient_scope", scope="{self.scope}"'
            )
        }


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


class NotWarmedUpError(GenesisError):
    """A component of :class:`genesis.app.Genesis` was used before ``await warm_up()``."""


class RolloutError(GenesisError):
    """A rollout command that cannot apply (no fine-tuned model, a bad percentage or state)."""

    status_code = 409


class SessionError(GenesisError):
    """The session store (conversation memory) failed or is unreachable (503 over HTTP)."""

    status_code = 503


class UnknownSessionError(SessionError):
    """No turns are stored under this session id for this key (unknown or expired)."""

    status_code = 404


class ServiceError(GenesisError):
    """The HTTP service refused a request before any work was done for it."""


class RequestTooLargeError(ServiceError):
    """A request body or field is over its size bound (413 over HTTP)."""


class OverloadedError(ServiceError):
    """Too many requests in flight in this process; try again after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class FeatureDisabledError(ServiceError):
    """A capability that is off in this deployment's configuration (e.g. running client code)."""


class RateLimitExceededError(ServiceError):
    """A client went over its request rate (HTTP 429); ``retry_after_s`` says when a request
    will be accepted again (``Retry-After``, whole seconds rounded up)."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}
