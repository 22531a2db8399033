"""Drop-in OpenAI compatibility: ``/v1/chat/completions`` (streaming too) and ``/v1/models``.

What a client may send, and what happens to it:

- ``model``: an agent name, or ``genesis`` (also ``auto``) to let the router pick the agent.
- ``messages``: content as a string or a list of ``{"type": "text", "text": ...}`` parts
  (other part types are a 422 naming them). The last user message is the question; earlier
  messages become the conversation context (turns in token space, after the retrieved
  chunks); a non-empty message after the last user message is a 422.
- ``max_tokens`` / ``max_completion_tokens``, ``temperature`` and ``stop`` replace the agent
  profile's settings for this request; ``n`` must be 1; ``stream`` and
  ``stream_options.include_usage`` are honoured.
- ``user`` names the session when no ``X-Genesis-Session`` header does (see
  :mod:`genesis.server._sessions`): a stored session is the context when the request carries
  no earlier turns of its own, and every answered exchange is appended to it.
- ``top_p``, ``presence_penalty``, ``frequency_penalty``, ``logprobs`` and
  ``parallel_tool_calls`` are accepted at their neutral values (what SDKs send by default)
  and refused otherwise; every other field (``tools``, ``response_format``, ``seed``, a
  misspelt option, ...) is a 422 naming it. Nothing is silently ignored.

Streaming: everything up to the model's first piece (routing, retrieval, token cache,
assembly, fallback to the baseline model) happens before the response starts, so those
failures are ordinary JSON errors with their status; after it, an error is an SSE error event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    field_validator,
    model_validator,
)

from genesis.agents import AnswerOptions
from genesis.app import AskResult
from genesis.errors import GenesisError, UnknownAgentError
from genesis.llm import Generation, GenerationRequest, OpenedStream, StreamDelta, Usage
from genesis.memory import SESSION_ID_PATTERN
from genesis.observability import request_stage
from genesis.rag import Generate, RAGUsage, Turn, turns_from_messages
from genesis.server._errors import short
from genesis.server._models import MAX_MESSAGE_CHARS, MAX_MESSAGES, ChatCompletion, Name
from genesis.server._rollout import rollout_headers
from genesis.server._sessions import Conversation, owner_of
from genesis.server._sse import DONE, MEDIA_TYPE, STREAM_HEADERS, ChunkWriter, error_event
from genesis.server._tracking import (
    PendingEvent,
    deferred_tracking,
    finish_stream,
    respond,
    stream_server_timing,
)

if TYPE_CHECKING:
    from genesis.app import Genesis

logger = logging.getLogger(__name__)

ROUTING_MODELS = ("genesis", "auto")
SessionHeader = Annotated[
    str | None,
    Header(alias="X-Genesis-Session", max_length=128, pattern=SESSION_ID_PATTERN),
]
# (field, neutral value): accepted only at that value, which is what SDKs send by default.
_NEUTRAL: dict[str, object] = {
    "top_p": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "logprobs": False,
    "parallel_tool_calls": True,
}
Answer = Callable[..., Awaitable[AskResult]]
# One server-sent event of a stream (``data`` holds a chunk's JSON, an error or [DONE]).
_SSE_EVENT = {
    "type": "object",
    "description": "a server-sent event: data is a chat.completion.chunk, an error or [DONE]",
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
    "required": ["data"],
}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: (
        Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]
        | Annotated[list[TextPart], Field(max_length=MAX_MESSAGES)]
        | None
    ) = None
    name: Annotated[str, Field(max_length=64)] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            for part in value:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind != "text":
                    raise ValueError(
                        f"content part type {str(kind)[:32]!r} is not supported: Genesis "
                        "answers from text, send parts of type 'text'"
                    )
        return value

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: StrictBool = False


# The schema says what the endpoint needs: at least one user message with text in it.
_HAS_USER_TEXT = {
    "contains": {
        "type": "object",
        "properties": {"role": {"const": "user"}, "content": {"type": "string", "pattern": r"\S"}},
        "required": ["role", "content"],
    }
}
# Strict numbers: the schema says number, so "5" (a string) is refused, not coerced.
MaxTokens = Annotated[int, Strict(), Field(ge=1, le=65_536)]
Number = Annotated[float, Strict()]


class ChatBody(BaseModel):
    """An OpenAI chat completion request; see the module docstring for each field."""

    model_config = ConfigDict(extra="forbid")

    model: Name = "genesis"
    messages: Annotated[
        list[ChatMessage],
        Field(min_length=1, max_length=MAX_MESSAGES, json_schema_extra=_HAS_USER_TEXT),
    ]
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    temperature: Annotated[float, Strict(), Field(ge=0, le=2)] | None = None
    stop: (
        Annotated[str, Field(min_length=1, max_length=64)]
        | Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=4)]
        | None
    ) = None
    user: Annotated[str, Field(max_length=128, pattern=SESSION_ID_PATTERN)] | None = None
    n: Annotated[int, Strict(), Field(ge=1, le=1, description="only 1")] | None = None
    top_p: Number | None = None
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    logprobs: StrictBool | None = None
    parallel_tool_calls: StrictBool | None = None

    @model_validator(mode="after")
    def _neutral_only(self) -> ChatBody:
        for name, neutral in _NEUTRAL.items():
            value = getattr(self, name)
            if value is not None and value != neutral:
                raise ValueError(f"{name}: only {neutral!r} is supported (or leave it out)")
        both = self.max_tokens, self.max_completion_tokens
        if None not in both and both[0] != both[1]:
            raise ValueError("max_tokens and max_completion_tokens differ; send one of them")
        return self

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    description: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """A chat request read as Genesis sees it: the question and the turns before it."""

    question: str
    history: list[Turn]


def read_messages(messages: list[ChatMessage]) -> ChatTurn:
    """The last user message is the question; earlier messages become turns."""
    last = next((i for i in range(len(messages) - 1, -1, -1) if _is_question(messages[i])), None)
    if last is None:
        raise ValueError("messages must contain a non-empty user message")
    if any(m.text().strip() for m in messages[last + 1 :]):
        raise ValueError(
            "messages after the last user message are not supported: end with the question"
        )
    earlier = [("system" if m.role == "developer" else m.role, m.text()) for m in messages[:last]]
    return ChatTurn(messages[last].text(), turns_from_messages(earlier))


def _is_question(message: ChatMessage) -> bool:
    return message.role == "user" and bool(message.text().strip())


class _StreamStart:
    """The generator a streamed request's pipeline calls: it opens the model's stream and
    returns once the first piece is in, so a failure before it (every model failing, a
    timeout) is an ordinary HTTP error; the rest is left in ``opened`` for the SSE body."""

    def __init__(self, genesis: Genesis) -> None:
        self._genesis = genesis
        self.opened: OpenedStream | None = None

    def generator_for(self, agent: str, finetuned: bool = True) -> Generate | None:
        if self._genesis.settings.llm.backend == "extractive":
            return None  # the pipeline's own: the whole answer, sent as one chunk

        async def generate(request: GenerationRequest) -> Generation:
            self.opened = await self._genesis.registry.open_stream(
                agent, request, use_finetuned=finetuned
            )
            first = self.opened.first
            prompt = len(request.prompt_ids) if request.prompt_ids is not None else 0
            return Generation(
                text=first.text,
                model=self.opened.model,
                usage=first.usage or Usage(prompt, 0),
                finish_reason=first.finish_reason or "stop",
            )

        return generate


def add_openai_routes(app: APIRouter, genesis: Genesis, answer: Answer) -> None:
    started = int(time.time())

    @app.get("/v1/models")
    async def list_models() -> ModelList:
        return ModelList(data=_model_cards(genesis, started))

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: Name) -> ModelCard:
        for card in _model_cards(genesis, started):
            if card.id == model_id:
                return card
        known = ", ".join(c.id for c in _model_cards(genesis, started))
        raise UnknownAgentError(f"unknown model {model_id!r}; models: {known}")

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        responses={200: {"content": {MEDIA_TYPE: {"schema": _SSE_EVENT}}}},
    )
    async def chat(
        body: ChatBody,
        request: Request,
        response: Response,
        session: SessionHeader = None,
    ) -> Any:
        """OpenAI chat completions; ``stream: true`` answers with server-sent events."""
        return await _chat(genesis, answer, body, request, response, session)


async def _chat(
    genesis: Genesis,
    answer: Answer,
    body: ChatBody,
    request: Request,
    response: Response,
    session: str | None,
) -> Response:
    turn = read_messages(body.messages)
    options = _options(genesis, body)
    with request_stage("session_read"):
        conversation = await Conversation.open(
            genesis.sessions, owner_of(request), session or body.user
        )
    history = _context(turn.history, conversation.history)
    agent = None if body.model in ROUTING_MODELS else body.model
    start = _StreamStart(genesis) if body.stream else None
    # A stream's event waits for its end: the completion tokens (and the cost) come last.
    with deferred_tracking(defer=start is not None) as pending:
        result = await answer(
            genesis,
            turn.question,
            agent,
            None,
            conversation.session_id,
            user_id=body.user,  # the rollout's unit
            history=history,
            options=options,
            generate_for=start.generator_for if start else None,
        )
    if start is None:
        with request_stage("session_write"):
            await conversation.record(turn.question, result.answer.answer, result.agent)
        # The waterfall goes into the `genesis` extension (the last field, depth 2).
        done = respond(openai_chat_response(body.model, result), result.answer.timings_ms, 2)
        rollout_headers(done, result.rollout)
        return done
    timing = stream_server_timing(result.answer.timings_ms)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    tracked = _Tracked(genesis, pending[0] if pending else None)
    events = _sse(
        body.model, result, start.opened, conversation, turn.question, include_usage, tracked
    )
    headers = {**STREAM_HEADERS, "Server-Timing": timing}
    streamed = StreamingResponse(events, media_type=MEDIA_TYPE, headers=headers)
    rollout_headers(streamed, result.rollout)
    return streamed


def _context(client: list[Turn], session: list[Turn]) -> list[Turn]:
    """The client's own earlier turns when it sent a conversation (OpenAI semantics); else
    the session's turns, followed by the client's system messages (if any)."""
    if any(role != "system" for turn in client for role, _ in turn.lines):
        return client
    return [*session, *client]


def _options(genesis: Genesis, body: ChatBody) -> AnswerOptions:
    max_tokens = body.max_completion_tokens or body.max_tokens
    limit = genesis.settings.llm.max_context_tokens // 2
    if max_tokens is not None and max_tokens > limit:
        field = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise ValueError(
            f"{field}: at most {limit} (half of llm.max_context_tokens, so that the prompt fits)"
        )
    return AnswerOptions(max_tokens, body.temperature, body.stops())


async def _sse(
    model: str,
    result: AskResult,
    opened: OpenedStream | None,
    conversation: Conversation,
    question: str,
    include_usage: bool,
    tracked: _Tracked,
) -> AsyncIterator[bytes]:
    """The chunks: the role, the text as it comes, the finish, usage, then ``[DONE]``.
    The request's event is recorded when the stream ends, however it ends."""
    writer = ChunkWriter(model, include_usage)
    yield writer.delta({"role": "assistant", "content": ""})
    first = result.answer.answer
    if first:
        yield writer.delta({"content": first})
    last = StreamDelta(finish_reason=opened.first.finish_reason if opened else "stop")
    pieces = [first]
    try:
        if opened is not None and last.finish_reason is None:
            async for delta in opened.rest():
                if delta.text:
                    pieces.append(delta.text)
                    yield writer.delta({"content": delta.text})
                last = delta
        await conversation.record(question, "".join(pieces), result.agent)
    except GenesisError as exc:
        tracked.error = exc
        logger.warning("stream of %s failed after it started: %s", model, short(str(exc)))
        yield error_event(type(exc).__name__, short(str(exc)))
        return
    except Exception as exc:
        tracked.error = exc
        logger.exception("stream of %s failed after it started", model)
        yield error_event("InternalError", "internal error (logged on the server)")
        return
    finally:
        if opened is not None:
            await opened.aclose()
        tracked.finish(last.usage)
    yield writer.delta({}, last.finish_reason or "stop")
    if include_usage:
        usage = _stream_usage(result.answer.usage, last.usage, opened)
        yield writer.usage(usage, tracked.extension(result))
    yield DONE


@dataclass(slots=True)
class _Tracked:
    """The deferred event of one stream, recorded once when the stream ends."""

    genesis: Genesis
    pending: PendingEvent | None
    error: BaseException | None = None

    def finish(self, final: Usage | None) -> None:
        if self.pending is not None:
            finish_stream(self.genesis, self.pending, final, self.error)
            self.pending = None

    def extension(self, result: AskResult) -> dict[str, Any]:
        cost = result.cost.as_dict() if result.cost is not None else None
        return {"request_id": result.request_id, "cost": cost}


def _stream_usage(
    usage: RAGUsage, final: Usage | None, opened: OpenedStream | None
) -> dict[str, Any]:
    if opened is None:  # the whole answer came at once: the pipeline counted it
        return openai_usage(usage)
    completion = final.completion_tokens if final else 0
    prompt = final.prompt_tokens if final and final.prompt_tokens else usage.prompt_tokens
    cached = usage.cached_tokens if prompt == usage.prompt_tokens else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _model_cards(genesis: Genesis, created: int) -> list[ModelCard]:
    cards = [
        ModelCard(
            id="genesis",
            created=created,
            owned_by="genesis",
            description="Routes each request to the best agent",
        )
    ]
    for profile in genesis.settings.agents.values():
        cards.append(
            ModelCard(
                id=profile.name,
                created=created,
                owned_by="genesis",
                description=profile.description,
            )
        )
    return cards


def openai_usage(usage: RAGUsage) -> dict[str, Any]:
    """The backend's own count when it gave one (a chat API counts its template too);
    Genesis' cache savings only where the prompt went as Genesis' token IDs."""
    prompt = usage.backend_prompt_tokens or usage.prompt_tokens
    same_ids = prompt == usage.prompt_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": prompt + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens if same_ids else 0},
    }


def openai_chat_response(model: str, result: AskResult) -> ChatCompletion:
    answer = result.answer
    writer = ChunkWriter(model)
    return ChatCompletion.model_validate(
        {
            "id": writer.id,
            "object": "chat.completion",
            "created": writer.created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.answer},
                    "finish_reason": "stop",
                }
            ],
            "usage": openai_usage(answer.usage),
            "genesis": {k: v for k, v in result.as_dict().items() if k != "waterfall"},
        }
    )
