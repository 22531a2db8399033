"""Requests, results and the LLMBackend protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from genesis.tokens import TokenIds


@dataclass(frozen=True, slots=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class Citation:
    """A numbered source of an answer: ``[n]`` in the text points at it."""

    number: int
    chunk_id: str
    source: str
    heading: str


@dataclass(frozen=True, slots=True)
class Quote:
    """A sentence of context ``context`` (an index into ``context_texts``) chosen to answer
    the query, with its score; a request's quotes come best first."""

    context: int
    text: str
    score: float


@dataclass(slots=True)
class GenerationRequest:
    """What a backend needs to answer.

    ``prompt_ids`` is the assembled prompt in token space (sent as-is by the completions
    backend); ``messages`` is the same prompt as chat messages (for APIs that take text);
    ``contexts`` are the retrieved chunks in prompt order (for the extractive backend and for
    citations). ``query`` is the user's question, unformatted. ``quotes`` are the sentences
    the pipeline ranked best for the query (the extractive backend quotes them; empty: it
    ranks sentences itself).
    """

    model: str
    query: str
    messages: list[Message]
    prompt_ids: TokenIds | None = None
    contexts: list[Citation] = field(default_factory=list)
    context_texts: list[str] = field(default_factory=list)
    max_tokens: int = 512
    temperature: float = 0.2
    timeout_s: float = 30.0
    # Stop sequences: the text ends before the first one (sent to the server, applied by the
    # extractive backend itself).
    stop: list[str] = field(default_factory=list)
    quotes: list[Quote] = field(default_factory=list)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Generation:
    """A backend's answer. ``extractive`` is True when no model wrote it."""

    text: str
    model: str
    usage: Usage
    finish_reason: str = "stop"
    completion_ids: list[int] | None = None
    citations: list[Citation] = field(default_factory=list)
    extractive: bool = False


@runtime_checkable
class LLMBackend(Protocol):
    """An answerer.

    Contract: ``generate`` returns a :class:`Generation` or raises a subclass of
    ``genesis.errors.LLMError`` (``LLMTimeoutError`` past ``request.timeout_s``,
    ``LLMRateLimitError`` on 429, ``LLMServerError`` on 5xx, ``LLMBadRequestError`` on other
    4xx); it never lets a vendor exception (httpx, openai) escape. ``aclose`` releases clients.
    """

    @property
    def name(self) -> str: ...

    async def generate(self, request: GenerationRequest) -> Generation: ...

    async def aclose(self) -> None: ...
