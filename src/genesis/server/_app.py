"""The HTTP API: lifespan -> middleware -> routes, config read once at the edge."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from genesis.errors import (
    AgentError,
    ConfigError,
    GenesisError,
    LLMError,
    PromptBudgetError,
    RetrievalError,
    UnknownAgentError,
    UnknownCollectionError,
)
from genesis.observability import (
    enable_metrics,
    record_prompt_tokens,
    record_request,
    render_metrics,
)


class AskBody(BaseModel):
    question: str = Field(min_length=1, max_length=8000)
    agent: str | None = None
    top_k: int | None = Field(None, ge=1, le=50)


class QueryBody(BaseModel):
    question: str = Field(min_length=1, max_length=8000)
    top_k: int | None = Field(None, ge=1, le=50)


class RouteBody(BaseModel):
    text: str = Field(min_length=1, max_length=8000)
    agent: str | None = None


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatBody(BaseModel):
    model: str = "genesis"
    messages: list[ChatMessage] = Field(min_length=1)


class RunBody(BaseModel):
    input: str = Field(min_length=1, max_length=200_000)
    tests: str | None = Field(None, max_length=200_000)
    filename: str | None = Field(None, max_length=500)


class CacheBody(BaseModel):
    collection: str | None = None


def create_app(genesis: Any) -> FastAPI:
    """Build the ASGI app around a (not yet warmed) :class:`genesis.app.Genesis`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if genesis.settings.observability.metrics:
            enable_metrics()
        try:
            await genesis.warm_up()
            await genesis.ensure_demo(progress=None)
            yield
        finally:
            await genesis.aclose()

    app = FastAPI(title="Genesis", version="0.1.0", lifespan=lifespan)
    app.state.genesis = genesis
    _add_error_handlers(app)
    _add_routes(app, genesis)
    return app


def _status_for(exc: GenesisError) -> int:
    if isinstance(exc, UnknownAgentError | UnknownCollectionError):
        return 404
    if isinstance(exc, PromptBudgetError | ConfigError):
        return 422
    if isinstance(exc, LLMError):
        return 502
    if isinstance(exc, AgentError | RetrievalError):
        return 500
    return 500


def _add_error_handlers(app: FastAPI) -> None:
    async def on_genesis_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GenesisError)
        body = {"error": {"type": type(exc).__name__, "message": str(exc)}}
        return JSONResponse(body, status_code=_status_for(exc))

    async def on_value_error(request: Request, exc: Exception) -> JSONResponse:
        body = {"error": {"type": "ValueError", "message": str(exc)}}
        return JSONResponse(body, status_code=422)

    app.add_exception_handler(GenesisError, on_genesis_error)
    app.add_exception_handler(ValueError, on_value_error)


def _timed(response: Response, result: Any) -> None:
    timings = result.answer.timings_ms
    response.headers["Server-Timing"] = ", ".join(f"{k};dur={v:.3f}" for k, v in timings.items())


def _add_routes(app: FastAPI, genesis: Any) -> None:
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        report = await genesis.health()
        return JSONResponse(report, status_code=200 if report["status"] != "down" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = render_metrics()
        return Response(body, media_type=content_type)

    @app.get("/v1/agents")
    async def agents() -> list[dict[str, Any]]:
        return genesis.describe_agents()  # type: ignore[no-any-return]

    @app.post("/v1/ask")
    async def ask(body: AskBody, response: Response) -> dict[str, Any]:
        result = await _answer(genesis, body.question, body.agent, body.top_k)
        _timed(response, result)
        return result.as_dict()  # type: ignore[no-any-return]

    @app.post("/v1/agents/{agent}/query")
    async def query(agent: str, body: QueryBody, response: Response) -> dict[str, Any]:
        result = await _answer(genesis, body.question, agent, body.top_k)
        _timed(response, result)
        return result.as_dict()  # type: ignore[no-any-return]

    @app.post("/v1/agents/{agent}/run")
    async def run(agent: str, body: RunBody) -> dict[str, Any]:
        extra = {k: v for k, v in (("tests", body.tests), ("filename", body.filename)) if v}
        result = await genesis.agent(agent).run(body.input, **extra)
        return result.as_dict()  # type: ignore[no-any-return]

    @app.post("/v1/route")
    async def route(body: RouteBody) -> dict[str, Any]:
        decision = genesis.route(body.text, agent=body.agent)
        return {
            "agent": decision.agent,
            "confidence": decision.confidence,
            "reason": decision.reason,
            "method": decision.method,
        }

    @app.get("/v1/search")
    async def search(
        q: str,
        collection: str,
        top_k: Annotated[int, Query(ge=1, le=100)] = 5,
        mode: str = "hybrid",
    ) -> Any:
        if mode not in ("hybrid", "dense", "bm25"):
            raise HTTPException(422, f"mode must be hybrid, dense or bm25, not {mode!r}")
        hits = await genesis.search(q, collection, top_k=top_k, mode=mode)
        return [
            {
                "rank": h.rank,
                "score": h.score,
                "source": h.chunk.source,
                "heading": h.chunk.heading,
                "chunk_id": h.chunk.id,
                "text": h.chunk.text,
            }
            for h in hits
        ]

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, response: Response) -> dict[str, Any]:
        question = _last_user_message(body.messages)
        agent = None if body.model in ("genesis", "auto") else body.model
        result = await _answer(genesis, question, agent, None)
        _timed(response, result)
        return _openai_chat_response(body.model, result)

    @app.get("/admin/cache/stats")
    async def cache_stats() -> Any:
        return await genesis.cache_stats()

    @app.post("/admin/cache/clear")
    async def cache_clear(body: CacheBody) -> Any:
        return await genesis.cache_clear(body.collection)

    @app.post("/admin/cache/warm")
    async def cache_warm(body: CacheBody) -> Any:
        return await genesis.cache_warm(body.collection)


async def _answer(genesis: Any, question: str, agent: str | None, top_k: int | None) -> Any:
    begin = time.perf_counter()
    status = "error"
    # Only configured names become metric labels: a client's string must not grow the series.
    name = "auto" if agent is None else agent if agent in genesis.settings.agents else "unknown"
    try:
        result = await genesis.ask(question, agent=agent, top_k=top_k)
        status, name = "ok", result.agent
        usage = result.answer.usage
        record_prompt_tokens(name, usage.prompt_tokens, usage.cached_tokens)
        return result
    finally:
        backend = genesis.settings.llm.backend
        record_request(name, backend, status, (time.perf_counter() - begin) * 1000.0)


def _last_user_message(messages: list[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user" and message.content.strip():
            return message.content
    raise HTTPException(422, "messages must contain a non-empty user message")


def _openai_usage(usage: Any) -> dict[str, Any]:
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


def _openai_chat_response(model: str, result: Any) -> dict[str, Any]:
    answer = result.answer
    usage = answer.usage
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.answer},
                "finish_reason": "stop",
            }
        ],
        "usage": _openai_usage(usage),
        "genesis": result.as_dict(),
    }
