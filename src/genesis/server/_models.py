"""Request bodies (every field bounded) and response models of the HTTP API.

Responses reuse the library's own dataclasses where they are what is returned (FastAPI
builds their schema), so ``/openapi.json`` describes exactly what a client receives.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from genesis.memory import SESSION_ID_PATTERN

# Bounds on what one request may carry. A question is also checked against the agent's token
# budget before it is embedded; these stop a 10 MB string before it is even parsed further.
MAX_QUESTION_CHARS = 8_000
MAX_MESSAGE_CHARS = 32_000
MAX_MESSAGES = 64
MAX_TASK_INPUT_CHARS = 64_000
MAX_NAME_CHARS = 64


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain non-whitespace text")
    return value


Question = Annotated[
    str, Field(min_length=1, max_length=MAX_QUESTION_CHARS), AfterValidator(_not_blank)
]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS, pattern=r"^[A-Za-z0-9_.:-]+$")]
TopK = Annotated[int, Field(ge=1, le=50)]
# The conversation this question belongs to (see genesis.server._sessions).
SessionId = Annotated[str, Field(min_length=1, max_length=128, pattern=SESSION_ID_PATTERN)]


class _Body(BaseModel):
    # Unknown fields are refused: a misspelt option must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class AskBody(_Body):
    question: Question
    agent: Name | None = None
    top_k: TopK | None = None
    # The rollout's unit: the user, else the session, else the request (genesis.rollout).
    user: Name | None = None
    session_id: SessionId | None = None


class QueryBody(_Body):
    question: Question
    top_k: TopK | None = None
    user: Name | None = None
    session_id: SessionId | None = None


class RouteBody(_Body):
    text: Question
    agent: Name | None = None


class RunBody(_Body):
    input: Annotated[
        str, Field(min_length=1, max_length=MAX_TASK_INPUT_CHARS), AfterValidator(_not_blank)
    ]
    tests: Annotated[str, Field(max_length=MAX_TASK_INPUT_CHARS)] | None = None
    filename: Annotated[str, Field(max_length=255)] | None = None


class CacheBody(_Body):
    collection: Name | None = None


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer: ``{"error": {"type", "message"}}``."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"]


class AgentHealth(BaseModel):
    """One real request through an agent (``/health/agents/{agent}``)."""

    model_config = ConfigDict(extra="allow")

    agent: str
    status: Literal["ok", "down"]
    latency_ms: float
    cached: bool  # the last result, within ``observability.agent_check_interval_s``
    age_s: float
    model: str | None = None
    reason: str | None = None


class Readiness(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "degraded", "down", "starting"]
    ready: bool | None = None
    # Each dependency: {"state": ok|degraded|down|none, "latency_ms", "critical", ...}.
    checks: dict[str, dict[str, Any]] = {}
    knowledge: str | None = None
    collections: dict[str, int] = {}
    token_cache: dict[str, Any] = {}
    llm: dict[str, Any] = {}
    elapsed_ms: float | None = None


class RouteResponse(BaseModel):
    agent: str
    confidence: float
    reason: str
    method: str


class SearchHit(BaseModel):
    rank: int
    score: float
    source: str
    heading: str
    chunk_id: str
    text: str


class AgentModels(BaseModel):
    finetuned: str | None
    baseline: str


class AgentInfo(BaseModel):
    name: str
    description: str
    collection: str
    task: str
    top_k: int
    cache_ttl_s: int
    models: AgentModels


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatChoiceMessage
    finish_reason: str


class PromptTokensDetails(BaseModel):
    cached_tokens: int


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage
    genesis: dict[str, Any]


class CacheStatsResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    store: str
    l1_hits: int
    l2_hits: int
    misses: int
    breaker_state: str
    breaker_opened: int


class RolloutSetBody(_Body):
    percent: Annotated[float, Field(ge=0, le=100)]
    why: Annotated[str, Field(max_length=500)] = "set over the API"
