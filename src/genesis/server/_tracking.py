"""Tracking on the HTTP path: request ids, the waterfall, each answer's cost and event, and
the feedback, usage and tracking-admin routes.

The outermost middleware (:class:`TrackingMiddleware`) gives every ``/v1/`` request an id
(``X-Request-Id`` on every response, errors included) and opens its waterfall; auth is timed
by wrapping the scope guard (:func:`timed_dependency`); the answer routes add the pipeline's
stages, time the event's enqueueing (``tracking``) and render the body themselves
(:func:`respond`) so that ``serialize`` is measured too, and the total is taken last.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from pydantic_core import to_json
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genesis.events import (
    RequestEvent,
    begin_request_facts,
    current_request_facts,
    end_request_facts,
    parse_usage_groups,
)
from genesis.observability import (
    begin_waterfall,
    current_waterfall,
    end_waterfall,
    record_stages,
    request_stage,
    server_timing,
)
from genesis.server._auth import Principal
from genesis.server._errors import error_response
from genesis.server._rollout import failure_fields

if TYPE_CHECKING:
    from genesis.app import AskResult, Genesis
    from genesis.events import Cost
    from genesis.llm import Usage

REQUEST_ID_HEADER = "X-Request-Id"
MAX_COMMENT_CHARS = 2_000


@dataclass(slots=True)
class _RequestContext:
    request_id: str
    ts: float  # Unix seconds when the request arrived
    scope: Scope


_context: ContextVar[_RequestContext | None] = ContextVar("genesis_request", default=None)


class TrackingMiddleware:
    """Outermost: a request id and a waterfall for every request under ``prefixes``."""

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...] = ("/v1/",)) -> None:
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        _, waterfall_token = begin_waterfall()
        _, facts_token = begin_request_facts()
        context = _RequestContext(uuid.uuid4().hex, time.time(), scope)
        context_token = _context.set(context)
        header = (REQUEST_ID_HEADER.lower().encode(), context.request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _context.reset(context_token)
            end_request_facts(facts_token)
            end_waterfall(waterfall_token)


def timed_dependency(
    dependency: Callable[..., Awaitable[Principal]], stage: str = "auth"
) -> Callable[..., Awaitable[Principal]]:
    """``dependency`` timed as ``stage`` of the request's waterfall (FastAPI reads the
    wrapped signature through ``__wrapped__``)."""

    @functools.wraps(dependency)
    async def timed(*args: Any, **kwargs: Any) -> Principal:
        with request_stage(stage):
            return await dependency(*args, **kwargs)

    return timed


def request_id() -> str:
    """This request's id (a fresh one outside the middleware, e.g. in a unit test)."""
    context = _context.get()
    return context.request_id if context else uuid.uuid4().hex


def _principal() -> Principal | None:
    context = _context.get()
    state = context.scope.get("state", {}) if context else {}
    principal = state.get("principal") if isinstance(state, dict) else None
    return principal if isinstance(principal, Principal) else None


def _started() -> tuple[float, float]:
    """(Unix time the request arrived, ms since then)."""
    context, waterfall = _context.get(), current_waterfall()
    ts = context.ts if context else time.time()
    elapsed = (time.perf_counter() - waterfall.start) * 1000.0 if waterfall else 0.0
    return ts, elapsed


# -- one event per request --------------------------------------------------------------


@dataclass(slots=True)
class PendingEvent:
    """The event of a streamed answer: recorded by :func:`finish_stream` when the stream
    ends, because its completion tokens (and so its cost) are known only then."""

    result: AskResult
    event: RequestEvent
    began: float  # perf_counter() when the request arrived


_deferred: ContextVar[list[PendingEvent] | None] = ContextVar("genesis_deferred", default=None)


@contextmanager
def deferred_tracking(defer: bool = True) -> Iterator[list[PendingEvent]]:
    """Within this block :func:`track_answer` hands its event back (in the yielded list)
    instead of recording it; a streaming route finishes it with :func:`finish_stream`."""
    pending: list[PendingEvent] = []
    token = _deferred.set(pending if defer else None)
    try:
        yield pending
    finally:
        _deferred.reset(token)


def finish_stream(
    genesis: Genesis,
    pending: PendingEvent,
    final: Usage | None,
    error: BaseException | None = None,
) -> Cost:
    """Price a streamed answer with the stream's final usage and record its event."""
    usage = pending.result.answer.usage
    billed = usage.backend_prompt_tokens or usage.prompt_tokens
    prompt = final.prompt_tokens if final and final.prompt_tokens else billed
    completion = final.completion_tokens if final else usage.completion_tokens
    cached = usage.cached_tokens if prompt == usage.prompt_tokens else 0
    cost = genesis.tracker.cost(pending.event.model, prompt, cached, completion)
    pending.result.cost = cost
    genesis.tracker.record(
        replace(
            pending.event,
            completion_tokens=completion,
            cost_usd=cost.total_usd,
            latency_ms=round((time.perf_counter() - pending.began) * 1000.0, 3),
            outcome="error" if error is not None else "ok",
            error_type=type(error).__name__ if error is not None else None,
        )
    )
    return cost


def track_answer(genesis: Genesis, result: AskResult, session_id: str | None = None) -> None:
    """Price ``result``, put its id and cost on it, queue its event (never blocking)."""
    with request_stage("tracking"):
        answer, usage = result.answer, result.answer.usage
        # Billed as the backend counted the prompt (a chat API adds its own template);
        # the token cache's share only where the prompt went as Genesis' own token IDs.
        billed = usage.backend_prompt_tokens or usage.prompt_tokens
        cached = usage.cached_tokens if billed == usage.prompt_tokens else 0
        result.cost = genesis.tracker.cost(answer.model, billed, cached, usage.completion_tokens)
        result.request_id = request_id()
        ts, elapsed = _started()
        principal = _principal()
        tiers = answer.cache_tiers
        facts = current_request_facts()
        fallback = facts.fallback_reason if facts else None
        # The rollout's assignment, where the rollout work puts it on the result.
        rollout: dict[str, Any] = getattr(result, "rollout", None) or {}
        event = RequestEvent(
            ts=ts,
            request_id=result.request_id,
            agent=result.agent,
            model=answer.model,
            outcome="ok",
            latency_ms=round(elapsed, 3),
            prompt_tokens=usage.prompt_tokens,
            cached_tokens=usage.cached_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=result.cost.total_usd,
            session_id=session_id,
            key_id=principal.key_id if principal else None,
            cache_l1=tiers.get("l1", 0),
            cache_l2=tiers.get("l2", 0),
            cache_miss=tiers.get("miss", 0),
            experiment=rollout.get("experiment"),
            variant=rollout.get("variant"),
            unit_kind=rollout.get("unit_kind"),
            fallback=fallback is not None,
            fallback_reason=fallback,
            abstained=answer.abstained,
        )
        deferred = _deferred.get()
        if deferred is None:
            genesis.tracker.record(event)
        else:
            deferred.append(PendingEvent(result, event, time.perf_counter() - elapsed / 1000.0))


def track_failure(
    genesis: Genesis, agent: str | None, exc: BaseException, session_id: str | None = None
) -> None:
    """Queue the event of a request that failed (its outcome is ``error``)."""
    known = agent if agent in genesis.settings.agents else ("auto" if agent is None else "unknown")
    ts, elapsed = _started()
    principal = _principal()
    fields: dict[str, Any] = {"agent": known, **failure_fields()}
    genesis.tracker.record(
        RequestEvent(
            ts=ts,
            request_id=request_id(),
            model="",
            outcome="error",
            latency_ms=round(elapsed, 3),
            session_id=session_id,
            key_id=principal.key_id if principal else None,
            error_type=type(exc).__name__,
            **fields,
        )
    )


# -- rendering: serialization timed, total taken last -------------------------------------


def respond(payload: Any, pipeline: dict[str, float] | None = None, depth: int = 1) -> Response:
    """The JSON response of ``payload`` (a dataclass or pydantic model without its
    ``waterfall``), with the request's waterfall in ``Server-Timing`` and in the body.

    The waterfall goes into the object that closes the body at nesting ``depth`` (1: the
    top level; 2: the last field of the top level, e.g. the ``genesis`` extension of a chat
    completion), spliced in after the total is taken, so serialization is one of its stages.
    """
    waterfall = current_waterfall()
    if waterfall is not None and pipeline:
        waterfall.add_pipeline(pipeline)
    with request_stage("serialize"):
        body = to_json(payload, exclude={"waterfall"})
    if waterfall is None:
        return Response(body, media_type="application/json")
    stages = waterfall.finish()
    record_stages(stages)
    closing = b"}" * depth
    if not body.endswith(closing):
        raise ValueError(f"the body does not end with {depth} nested objects")
    body = body[:-depth] + b',"waterfall":' + to_json(stages) + closing
    return Response(
        body, media_type="application/json", headers={"Server-Timing": server_timing(stages)}
    )


def stream_server_timing(pipeline: dict[str, float]) -> str:
    """``Server-Timing`` of a streamed answer: the waterfall up to its headers (the first
    tokens are generated by then; the rest of the stream comes after the header is sent)."""
    waterfall = current_waterfall()
    if waterfall is None:
        return server_timing(pipeline)
    waterfall.add_pipeline(pipeline)
    stages = waterfall.finish()
    record_stages(stages)
    return server_timing(stages)


# -- feedback, usage, tracking admin ------------------------------------------------------


class FeedbackBody(BaseModel):
    model_config = {"extra": "forbid"}

    request_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    # Any scale the team chooses (1/0 for thumbs, 1-5 stars), bounded and finite.
    score: Annotated[float, Field(ge=-100, le=100, allow_inf_nan=False)]
    comment: Annotated[str, Field(max_length=MAX_COMMENT_CHARS)] | None = None


class FeedbackResponse(BaseModel):
    request_id: str
    score: float
    comment: str | None


class UsageRowModel(BaseModel):
    agent: str | None = None
    model: str | None = None
    session: str | None = None
    day: str | None = None
    variant: str | None = None
    requests: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost_usd: float


class UsageResponse(BaseModel):
    by: list[str]
    scope: Literal["all", "key"]  # "key": only the calling key's requests (not admin)
    rows: list[UsageRowModel]
    total: UsageRowModel


def add_feedback_route(app: APIRouter, genesis: Genesis) -> None:
    @app.post("/v1/feedback", response_model=FeedbackResponse)
    async def feedback(body: FeedbackBody) -> Response:
        store = await genesis.tracker.store()
        args = (body.request_id, body.score, body.comment)
        found = await _to_thread(store.add_feedback, *args)
        if not found and await genesis.tracker.flush():
            # The answer may have left only moments ago: its event could still be queued.
            found = await _to_thread(store.add_feedback, *args)
        if not found:
            return error_response(404, "NotFound", "no request with this id was recorded")
        saved = FeedbackResponse(request_id=body.request_id, score=body.score, comment=body.comment)
        return JSONResponse(saved.model_dump())


def add_usage_route(app: APIRouter, genesis: Genesis) -> None:
    # Unset group fields are left out: a row names only the columns it was grouped by.
    @app.get("/v1/usage", response_model_exclude_unset=True)
    async def usage(
        by: Annotated[str, Query(max_length=64, pattern=r"^[a-z_,]*$")] = "agent",
        agent: Annotated[str | None, Query(max_length=64)] = None,
        session: Annotated[str | None, Query(max_length=128)] = None,
        since: Annotated[str | None, Query(max_length=40)] = None,
        until: Annotated[str | None, Query(max_length=40)] = None,
    ) -> UsageResponse:
        groups = parse_usage_groups(by)
        key_id = _usage_key(genesis)
        # Read your own writes: this process's queued events reach the store first.
        await genesis.tracker.flush(timeout_s=2.0)
        store = await genesis.tracker.store()
        window = {"since": _time(since), "until": _time(until)}
        filters: dict[str, Any] = {"agent": agent, "session_id": session, "key_id": key_id}
        rows = await _to_thread(store.usage, by=groups, **filters, **window)
        totals = await _to_thread(store.usage, **filters, **window)
        return UsageResponse(
            by=[g for g in by.split(",") if g],
            scope="all" if key_id is None else "key",
            rows=[_row(r.group, r) for r in rows],
            total=_row({}, totals[0]) if totals else _empty_row(),
        )


def add_tracking_admin_route(app: APIRouter, genesis: Genesis) -> None:
    @app.get("/admin/tracking")
    async def tracking() -> dict[str, Any]:
        """The event queue: queued, written, dropped (full queue), failed, batches; and the
        models answered without a price (requests each)."""
        return genesis.tracker.stats()


def _usage_key(genesis: Genesis) -> str | None:
    """Whose usage a caller may see: an admin key (or the anonymous loopback caller of a
    server without keys) sees every key's; any other key only its own requests."""
    principal = _principal()
    if principal is None or principal.anonymous or "admin" in principal.scopes:
        return None
    return principal.key_id


def _time(text: str | None) -> float | None:
    from genesis.events import parse_time

    return None if text is None else parse_time(text)


def _row(group: dict[str, str | None], row: Any) -> UsageRowModel:
    named = {("session" if k == "session_id" else k): v for k, v in group.items()}
    return UsageRowModel(
        **named,
        requests=row.requests,
        prompt_tokens=row.prompt_tokens,
        cached_tokens=row.cached_tokens,
        completion_tokens=row.completion_tokens,
        cost_usd=row.cost_usd,
    )


def _empty_row() -> UsageRowModel:
    return UsageRowModel(
        requests=0, prompt_tokens=0, cached_tokens=0, completion_tokens=0, cost_usd=0.0
    )


async def _to_thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(func, *args, **kwargs)
