"""Health routes: liveness, readiness of every dependency, a real check per agent, metrics.

``/health``, ``/health/live``, ``/health/ready`` and ``/metrics`` are open (probes and
scrapers carry no key); ``/health/agents/{agent}`` costs a model call, so it needs the
``query`` scope and runs at most once per agent per ``observability.agent_check_interval_s``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse

from genesis.observability import render_metrics
from genesis.server._models import AgentHealth, Health, Name, Readiness

if TYPE_CHECKING:
    from genesis.app import Genesis


def add_probe_routes(app: FastAPI, genesis: Genesis) -> None:
    @app.get("/health")
    async def health() -> Health:
        return Health(status="ok")

    @app.get("/health/live")
    async def live() -> Health:
        """The process answers (its event loop runs); says nothing of dependencies."""
        return Health(status="ok")

    @app.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
    async def ready() -> JSONResponse:
        """200 while serving (``ok``, or ``degraded`` with a non-critical dependency down);
        503 while starting or when a critical one (the knowledge store) is down."""
        report = await genesis.health()
        serving = report["status"] in ("ok", "degraded")
        return JSONResponse(report, status_code=200 if serving else 503)

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        body, content_type = render_metrics()
        return Response(body, media_type=content_type)


def add_agent_check_route(router: APIRouter, genesis: Genesis) -> None:
    @router.get(
        "/health/agents/{agent}",
        response_model=AgentHealth,
        responses={503: {"model": AgentHealth}},
    )
    async def agent_health(agent: Name) -> JSONResponse:
        """One real, tiny request through the agent's pipeline and model, under a timeout;
        503 when it failed or timed out."""
        result = await genesis.check_agent(agent)
        return JSONResponse(result, status_code=200 if result["status"] == "ok" else 503)
