"""The HTTP API: lifespan -> middleware (body limit, in-flight bound) -> routes.

Configuration is read once here, at the edge. Every route is typed against
:class:`genesis.app.Genesis` and declares its response model, so ``/openapi.json`` says what
is really returned, and every error is ``{"error": {"type", "message"}}``.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response

from genesis.app import AskResult
from genesis.errors import FeatureDisabledError, GenesisError, LLMTimeoutError
from genesis.observability import (
    agent_label,
    enable_metrics,
    enable_tracing,
    model_label,
    record_budgets,
    record_request,
    record_request_trace,
    record_tokens,
    request_stage,
    shutdown_tracing,
    tracing_enabled,
)
from genesis.rollout import run_auto
from genesis.server._auth import AccessControl, requires
from genesis.server._errors import ERROR_RESPONSES, add_error_handlers, status_for
from genesis.server._health import add_agent_check_route, add_probe_routes
from genesis.server._limits import (
    AccessLogMiddleware,
    BodyLimitMiddleware,
    InFlightLimitMiddleware,
    KeepAliveRecycleMiddleware,
)
from genesis.server._models import (
    AgentInfo,
    AskBody,
    CacheBody,
    CacheStatsResponse,
    Name,
    QueryBody,
    RouteBody,
    RouteResponse,
    RunBody,
    SearchHit,
)
from genesis.server._openai_compat import add_openai_routes
from genesis.server._rollout import add_rollout_routes, rollout_headers
from genesis.server._sessions import Conversation, add_session_routes, owner_of
from genesis.server._tracking import (
    TrackingMiddleware,
    add_feedback_route,
    add_tracking_admin_route,
    add_usage_route,
    respond,
    timed_dependency,
    track_answer,
    track_failure,
)

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
        obs = genesis.settings.observability
        if obs.metrics:
            enable_metrics(**_label_names(genesis))
            budgets = genesis.settings.budgets
            record_budgets(budgets.cost_per_hour_usd, budgets.cost_per_day_usd)
        if obs.otlp_endpoint:
            enable_tracing(obs.otlp_endpoint, obs.service_name, obs.trace_sample_ratio)
        auto: asyncio.Task[None] | None = None
        try:
            await genesis.warm_up()
            await genesis.ensure_demo(progress=None)
            await genesis.tracker.store()  # the event store's tables, before any request
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
            if tracing_enabled():
                await asyncio.to_thread(shutdown_tracing)  # exports the spans still queued

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
    if server.keepalive_requests:
        app.add_middleware(KeepAliveRecycleMiddleware, max_requests=server.keepalive_requests)
    # Outermost: the request id and the waterfall's clock start before anything else runs.
    app.add_middleware(TrackingMiddleware)
    return app


def _start_rollout_auto(genesis: Genesis) -> asyncio.Task[None] | None:
    """The automatic rollout mode, when configured (one replica at a time acts: a lock)."""
    settings = genesis.settings.rollout
    if not settings.auto:
        return None
    return asyncio.create_task(run_auto(genesis.rollout, settings.auto_interval_s))


def _add_routes(app: FastAPI, genesis: Genesis) -> None:
    """Health and metrics are open (probes); every other route needs its scope."""
    add_probe_routes(app, genesis)
    # The scope guard is the waterfall's "auth" stage.
    query = APIRouter(dependencies=[Depends(timed_dependency(requires("query")))])
    add_agent_check_route(query, genesis)
    run = APIRouter(dependencies=[Depends(timed_dependency(requires("run")))])
    admin = APIRouter(dependencies=[Depends(timed_dependency(requires("admin")))])
    _add_answer_routes(query, genesis)
    add_feedback_route(query, genesis)
    add_usage_route(query, genesis)
    add_tracking_admin_route(admin, genesis)
    _add_run_routes(run, genesis)
    _add_admin_routes(admin, genesis)
    for router in (query, run, admin):
        app.include_router(router)


def _add_answer_routes(app: APIRouter, genesis: Genesis) -> None:
    @app.get("/v1/agents")
    async def agents() -> list[AgentInfo]:
        return [AgentInfo.model_validate(a) for a in genesis.describe_agents()]

    # Answers are rendered by `respond` (serialization is a stage of the waterfall); the
    # declared response_model keeps /openapi.json truthful.
    @app.post("/v1/ask", response_model=AskResult)
    async def ask(body: AskBody, request: Request) -> Response:
        return await _session_answer(genesis, request, body, body.agent)

    @app.post("/v1/agents/{agent}/query", response_model=AskResult)
    async def query(agent: Name, body: QueryBody, request: Request) -> Response:
        return await _session_answer(genesis, request, body, agent)

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

    add_openai_routes(app, genesis, _answer)
    add_session_routes(app, genesis)


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
    session_id: str | None = None,
    **options: Any,
) -> AskResult:
    """``genesis.ask`` with the request's metrics, cost and event; ``options`` are ask's
    keyword options (history, generation options)."""
    begin, begin_ns = time.perf_counter(), time.time_ns()
    # Metric labels: the recorder keeps only configured agent and model names.
    outcome, name, model, variant = "error", agent, None, None
    stages: dict[str, float] = {}
    try:
        result = await genesis.ask(question, agent=agent, top_k=top_k, **options)
        outcome, name, model = "ok", result.agent, result.answer.model
        variant = result.rollout["variant"] if result.rollout else None
        stages = result.answer.timings_ms
        usage = result.answer.usage
        record_tokens(
            name, model, usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens
        )
        track_answer(genesis, result, session_id)  # its cost and event (queued, not written)
        return result
    except asyncio.CancelledError:
        outcome = "cancelled"  # the client went away: not an error of the service
        raise
    except Exception as exc:
        outcome = _outcome(exc)
        track_failure(genesis, name, exc, session_id)
        raise
    finally:
        record_request(name, model, variant, outcome, time.perf_counter() - begin)
        if tracing_enabled():
            _trace(begin_ns, stages, name, model, outcome)


async def _session_answer(
    genesis: Genesis, request: Request, body: AskBody | QueryBody, agent: str | None
) -> Response:
    """An answer in the body's session: its turns are the context, the new one is kept."""
    with request_stage("session_read"):
        chat = await Conversation.open(genesis.sessions, owner_of(request), body.session_id)
    result = await _answer(
        genesis,
        body.question,
        agent,
        body.top_k,
        body.session_id,
        history=chat.history,
        user_id=body.user,
    )
    with request_stage("session_write"):
        await chat.record(body.question, result.answer.answer, result.agent)
    response = respond(result, result.answer.timings_ms)
    rollout_headers(response, result.rollout)
    return response


def _trace(
    begin_ns: int, stages: dict[str, float], agent: str | None, model: str | None, outcome: str
) -> None:
    a, m = agent_label(agent), model_label(model)  # span attributes: configured names only
    record_request_trace(stages, begin_ns=begin_ns, agent=a, model=m, outcome=outcome)


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
