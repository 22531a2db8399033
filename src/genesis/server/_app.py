"""The HTTP API: lifespan -> middleware (body limit, in-flight bound) -> routes.

Configuration is read once here, at the edge. Every route is typed against
:class:`genesis.app.Genesis` and declares its response model, so ``/openapi.json`` says what
is really returned, and every error is ``{"error": {"type", "message"}}``.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Response
from fastapi.responses import JSONResponse

from genesis.app import AskResult
from genesis.errors import FeatureDisabledError, GenesisError, LLMTimeoutError
from genesis.observability import (
    enable_metrics,
    record_request,
    record_tokens,
    render_metrics,
)
from genesis.rag import RAGUsage
from genesis.rollout import run_auto
from genesis.server._auth import AccessControl, requires
from genesis.server._errors import ERROR_RESPONSES, add_error_handlers, status_for
from genesis.server._limits import (
    AccessLogMiddleware,
    BodyLimitMiddleware,
    InFlightLimitMiddleware,
)
from genesis.server._models import (
    AgentInfo,
    AskBody,
    CacheBody,
    CacheStatsResponse,
    ChatBody,
    ChatCompletion,
    ChatMessage,
    Health,
    Name,
    QueryBody,
    Readiness,
    RouteBody,
    RouteResponse,
    RunBody,
    SearchHit,
)
from genesis.server._rollout import add_rollout_routes, rollout_headers

if TYPE_CHECKING:
    from genesis.app import Genesis

# Agent tasks that execute code a client sent (its source, its tests): off unless enabled.
_CODE_TASKS = frozenset({"tests", "evolve"})


def create_app(genesis: Genesis) -> FastAPI:
    """Build the ASGI app around a (not yet warmed) :class:`genesis.app.Genesis`."""
    server = genesis.settings.server
    access = AccessControl.from_settings(genesis.settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if genesis.settings.observability.metrics:
            enable_metrics(**_label_names(genesis))
        auto: asyncio.Task[None] | None = None
        try:
            await genesis.warm_up()
            await genesis.ensure_demo(progress=None)
            # Everything loaded so far lives as long as the process: moved out of the cyclic
            # collector's reach, a full collection under load no longer walks it (measured
            # here: one gen-2 pass over the ~100k start-up objects stalled the loop 73 ms).
            gc.collect()
            gc.freeze()
            auto = _start_rollout_auto(genesis)
            yield
        finally:
            if auto is not None:
                auto.cancel()
            await access.aclose()
            await genesis.aclose()

    app = FastAPI(
        title="Genesis",
        version="0.1.0",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.genesis = genesis
    access.install(app)
    add_error_handlers(app)
    _add_routes(app, genesis)
    # Added last = outermost: an oversized body is refused before it takes an in-flight slot.
    app.add_middleware(
        InFlightLimitMiddleware,
        max_in_flight=server.max_in_flight,
        retry_after_s=server.retry_after_s,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=server.max_body_bytes)
    app.add_middleware(AccessLogMiddleware)
    return app


def _start_rollout_auto(genesis: Genesis) -> asyncio.Task[None] | None:
    """The automatic rollout mode, when configured (one replica at a time acts: a lock)."""
    settings = genesis.settings.rollout
    if not settings.auto:
        return None
    return asyncio.create_task(run_auto(genesis.rollout, settings.auto_interval_s))


def _timed(response: Response, result: AskResult) -> None:
    timings = result.answer.timings_ms
    response.headers["Server-Timing"] = ", ".join(f"{k};dur={v:.3f}" for k, v in timings.items())
    rollout_headers(response, result.rollout)


def _add_routes(app: FastAPI, genesis: Genesis) -> None:
    """Health and metrics are open (probes); every other route needs its scope."""
    _add_health_routes(app, genesis)
    query = APIRouter(dependencies=[Depends(requires("query"))])
    run = APIRouter(dependencies=[Depends(requires("run"))])
    admin = APIRouter(dependencies=[Depends(requires("admin"))])
    _add_answer_routes(query, genesis)
    _add_run_routes(run, genesis)
    _add_admin_routes(admin, genesis)
    for router in (query, run, admin):
        app.include_router(router)


def _add_health_routes(app: FastAPI, genesis: Genesis) -> None:
    @app.get("/health")
    async def health() -> Health:
        return Health(status="ok")

    @app.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
    async def ready() -> JSONResponse:
        report = await genesis.health()
        serving = report["status"] in ("ok", "degraded")
        return JSONResponse(report, status_code=200 if serving else 503)

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        body, content_type = render_metrics()
        return Response(body, media_type=content_type)


def _add_answer_routes(app: APIRouter, genesis: Genesis) -> None:
    @app.get("/v1/agents")
    async def agents() -> list[AgentInfo]:
        return [AgentInfo.model_validate(a) for a in genesis.describe_agents()]

    @app.post("/v1/ask")
    async def ask(body: AskBody, response: Response) -> AskResult:
        result = await _answer(
            genesis, body.question, body.agent, body.top_k, body.user, body.session_id
        )
        _timed(response, result)
        return result

    @app.post("/v1/agents/{agent}/query")
    async def query(agent: Name, body: QueryBody, response: Response) -> AskResult:
        result = await _answer(
            genesis, body.question, agent, body.top_k, body.user, body.session_id
        )
        _timed(response, result)
        return result

    @app.post("/v1/route")
    async def route(body: RouteBody) -> RouteResponse:
        decision = await genesis.route_async(body.text, agent=body.agent)
        return RouteResponse(
            agent=decision.agent,
            confidence=decision.confidence,
            reason=decision.reason,
            method=decision.method,
        )

    @app.get("/v1/search")
    async def search(
        q: Annotated[str, Query(min_length=1, max_length=2000, pattern=r"\S")],
        collection: Annotated[str, Query(min_length=1, max_length=64)],
        top_k: Annotated[int, Query(ge=1, le=100)] = 5,
        mode: Literal["hybrid", "dense", "bm25"] = "hybrid",
    ) -> list[SearchHit]:
        hits = await genesis.search(q, collection, top_k=top_k, mode=mode)
        return [
            SearchHit(
                rank=h.rank,
                score=h.score,
                source=h.chunk.source,
                heading=h.chunk.heading,
                chunk_id=h.chunk.id,
                text=h.chunk.text,
            )
            for h in hits
        ]

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, response: Response) -> ChatCompletion:
        if body.stream:
            raise ValueError("stream: true is not supported yet; call without streaming")
        question = _last_user_message(body.messages)
        agent = None if body.model in ("genesis", "auto") else body.model
        result = await _answer(genesis, question, agent, None, body.user)
        _timed(response, result)
        return _openai_chat_response(body.model, result)


def _add_run_routes(app: APIRouter, genesis: Genesis) -> None:
    @app.post("/v1/agents/{agent}/run")
    async def run(agent: Name, body: RunBody) -> dict[str, Any]:
        target = genesis.agent(agent)
        if target.profile.task in _CODE_TASKS and not genesis.settings.server.allow_code_execution:
            raise FeatureDisabledError(
                f"agent {agent!r} runs client-supplied code, which is disabled in this "
                "deployment (server.allow_code_execution)"
            )
        options = {k: v for k, v in (("tests", body.tests), ("filename", body.filename)) if v}
        # A typed request per task: an option the task does not take is a 422 naming it.
        result = await target.run(target.request(body.input, **options))
        return result.as_dict()


def _add_admin_routes(app: APIRouter, genesis: Genesis) -> None:
    add_rollout_routes(app, genesis)

    @app.get("/admin/cache/stats")
    async def cache_stats() -> CacheStatsResponse:
        return CacheStatsResponse.model_validate(await genesis.cache_stats())

    @app.post("/admin/cache/clear")
    async def cache_clear(body: CacheBody) -> dict[str, int]:
        return await genesis.cache_clear(body.collection)

    @app.post("/admin/cache/warm")
    async def cache_warm(body: CacheBody) -> dict[str, int]:
        return await genesis.cache_warm(body.collection)


async def _answer(
    genesis: Genesis,
    question: str,
    agent: str | None,
    top_k: int | None,
    user: str | None = None,
    session_id: str | None = None,
) -> AskResult:
    begin = time.perf_counter()
    # Metric labels: the recorder keeps only configured agent and model names.
    outcome, name, model, variant = "error", agent, None, None
    try:
        result = await genesis.ask(
            question, agent=agent, top_k=top_k, user_id=user, session_id=session_id
        )
        outcome, name, model = "ok", result.agent, result.answer.model
        variant = result.rollout["variant"] if result.rollout else None
        usage = result.answer.usage
        record_tokens(
            name, model, usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens
        )
        return result
    except Exception as exc:
        outcome = _outcome(exc)
        raise
    finally:
        record_request(name, model, variant, outcome, time.perf_counter() - begin)


def _outcome(exc: Exception) -> str:
    """The ``outcome`` label of a failed request: the error-rate alert counts ``error`` and
    ``timeout``, not a client's mistake (``rejected``: an unknown agent, a prompt too long)."""
    if isinstance(exc, LLMTimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, GenesisError) and status_for(exc) < 500:
        return "rejected"
    return "error"


def _label_names(genesis: Genesis) -> dict[str, set[str]]:
    """The configured agent and model names: the only ones recorded as metric labels."""
    s = genesis.settings
    models = {s.llm.default_model, "extractive"}
    for profile in s.agents.values():
        models.update(m for m in (profile.models.finetuned, profile.models.baseline) if m)
    return {"agents": set(s.agents), "models": models, "variants": {"finetuned", "baseline"}}


def _last_user_message(messages: list[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user" and message.content.strip():
            return message.content
    raise ValueError("messages must contain a non-empty user message")


def _openai_usage(usage: RAGUsage) -> dict[str, Any]:
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


def _openai_chat_response(model: str, result: AskResult) -> ChatCompletion:
    answer = result.answer
    return ChatCompletion.model_validate(
        {
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
            "usage": _openai_usage(answer.usage),
            "genesis": result.as_dict(),
        }
    )
