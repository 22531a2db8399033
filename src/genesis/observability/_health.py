"""Readiness checks of a service's dependencies, run concurrently, each under a timeout.

A check is an async callable that returns details (a mapping) when its dependency answers and
raises when it does not; details may carry their own ``state`` (``degraded`` for a dependency
that answers but is being worked around, ``none`` for one that is not configured). A check
registered as ``critical`` is one the service cannot serve without: its failure makes the
whole report ``down`` (HTTP 503). Any other failure makes it ``degraded`` (still 200).

Components register their own check (``genesis.health_checks.register("session_store",
store.ping)``), so the list grows with the service without this module knowing them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

logger = logging.getLogger(__name__)

CheckFn = Callable[[], Awaitable[Mapping[str, Any] | None]]
Status = Literal["ok", "degraded", "down"]
_STATES = frozenset({"ok", "degraded", "down", "none"})
_REASON_CHARS = 300


@dataclass(frozen=True)
class HealthCheck:
    name: str
    check: CheckFn
    critical: bool
    timeout_s: float | None  # None: the registry's default


class HealthChecks:
    """The named checks of one service; :meth:`run` runs them all at once."""

    def __init__(self, timeout_s: float = 2.0) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self._checks: dict[str, HealthCheck] = {}

    def register(
        self, name: str, check: CheckFn, *, critical: bool = False, timeout_s: float | None = None
    ) -> None:
        """Add (or replace) the check called ``name``."""
        self._checks[name] = HealthCheck(name, check, critical, timeout_s)

    def unregister(self, name: str) -> None:
        self._checks.pop(name, None)

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    async def run(self) -> dict[str, dict[str, Any]]:
        """``{name: {"state", "latency_ms", "critical", "reason"?, ...details}}``."""
        checks = list(self._checks.values())
        results = await asyncio.gather(*(self._one(c) for c in checks))
        return {c.name: r for c, r in zip(checks, results, strict=True)}

    async def _one(self, check: HealthCheck) -> dict[str, Any]:
        timeout_s = check.timeout_s or self.timeout_s
        began = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                details = dict(await check.check() or {})
        except TimeoutError:
            details = {"state": "down", "reason": f"no answer within {timeout_s:g} s"}
        except Exception as exc:  # a failing dependency is a result, never an error here
            details = {"state": "down", "reason": _reason(exc)}
        state = str(details.pop("state", "ok"))
        if state not in _STATES:
            state = "down"
        latency_ms = round((time.perf_counter() - began) * 1000.0, 3)
        return {"state": state, "latency_ms": latency_ms, "critical": check.critical, **details}


def overall_status(results: Mapping[str, Mapping[str, Any]]) -> Status:
    """``down`` when a critical check is down; ``degraded`` when any check is not ok."""
    status: Status = "ok"
    for result in results.values():
        if result["state"] == "down" and result["critical"]:
            return "down"
        if result["state"] in ("down", "degraded"):
            status = "degraded"
    return status


def _reason(exc: BaseException) -> str:
    """The error's class and first line, bounded (messages here never carry secrets: the
    stores and clients redact URLs where they raise)."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text[:_REASON_CHARS]
