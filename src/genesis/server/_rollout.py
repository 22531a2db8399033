"""Rollout over HTTP: the variant headers of an answer, and the admin routes (status, set)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response

from genesis.rollout import current_assignment
from genesis.server._auth import principal_of
from genesis.server._models import Name, RolloutSetBody

if TYPE_CHECKING:
    from genesis.app import Genesis

VARIANT_HEADER = "X-Genesis-Variant"
EXPERIMENT_HEADER = "X-Genesis-Experiment"
UNIT_HEADER = "X-Genesis-Unit"  # user | session | request: what the assignment keyed on


def rollout_headers(response: Response, rollout: dict[str, Any] | None) -> None:
    """Tell every client (OpenAI SDKs too, which drop unknown body fields) which variant
    answered."""
    if rollout is None:
        return
    response.headers[VARIANT_HEADER] = str(rollout["variant"])
    response.headers[UNIT_HEADER] = str(rollout["unit_kind"])
    if rollout["experiment"] is not None:
        response.headers[EXPERIMENT_HEADER] = str(rollout["experiment"])


def failure_fields() -> dict[str, Any]:
    """The agent and rollout fields of a failed request whose variant was already chosen."""
    found = current_assignment()
    if found is None:
        return {}
    agent, assignment = found
    return {
        "agent": agent,
        "experiment": assignment.experiment,
        "variant": assignment.variant,
        "unit_kind": assignment.unit.kind,
    }


def add_rollout_routes(app: APIRouter, genesis: Genesis) -> None:
    """Admin scope (the router carries the guard)."""

    @app.get("/admin/rollout/{agent}")
    async def rollout_status(agent: Name) -> dict[str, Any]:
        # Read your own writes: this process's queued events reach the store first.
        await genesis.tracker.flush(timeout_s=10.0)
        # Database reads and statistics: off the loop.
        return await asyncio.to_thread(genesis.rollout.status, agent)

    @app.post("/admin/rollout/{agent}/set")
    async def rollout_set(agent: Name, body: RolloutSetBody, request: Request) -> dict[str, Any]:
        principal = principal_of(request)
        who = f"api:{principal.key_id}" if principal and principal.key_id else "api"
        await asyncio.to_thread(genesis.rollout.set, agent, body.percent, who, body.why)
        return await asyncio.to_thread(genesis.rollout.status, agent)
