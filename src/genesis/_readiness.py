"""What ``/health/ready`` and ``/health/agents/{agent}`` check in a :class:`~genesis.app.Genesis`.

Built-in dependency checks (more register themselves: ``genesis.health_checks.register``):

================  ========  ==================================================================
check             critical  what "down" means
================  ========  ==================================================================
``knowledge``     yes       the knowledge catalog or the vector store is gone: the embedded
                            store's files under ``GENESIS_HOME/knowledge`` missing or
                            unreadable, or the Qdrant server not answering. Nothing can be
                            retrieved (or reloaded after a restart): 503.
``token_cache``   no        the L2 store (Redis, or the SQLite file) fails its ``ping``, or
                            its breaker is not closed: requests tokenize locally; degraded.
``llm``           no        the inference server's ``GET /v1/models`` fails. Degraded, not
                            503: the registry's fallbacks and breaker handle model failures
                            per request, and a shared inference outage must not pull every
                            replica out of the load balancer (search still works).
``session_store`` no        the session store (Redis when ``redis.url`` is set) fails its
                            ``PING``: requests without a session are served as before.
``event_store``   no        the events database (SQLite file or PostgreSQL) does not answer
                            a query: requests are served, their events wait in the bounded
                            queue (a full queue is counted in genesis_queue_dropped_total).
================  ========  ==================================================================

``/health/agents/{agent}`` runs one real, tiny request through the agent's whole pipeline and
model (it costs a model call): at most once per agent per ``agent_check_interval_s`` in a
process; calls in between get the last result, marked ``cached``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genesis.observability import HealthChecks, overall_status

if TYPE_CHECKING:
    from genesis.app import Genesis

logger = logging.getLogger(__name__)

# Short, on every agent's topic enough to retrieve something; the answer is not judged.
PROBE_QUESTION = "What is this knowledge base about?"
_REASON_CHARS = 300


def register_builtin_checks(genesis: Genesis, checks: HealthChecks) -> None:
    checks.register("knowledge", lambda: _knowledge(genesis), critical=True)
    checks.register("token_cache", lambda: _token_cache(genesis))
    checks.register("llm", lambda: _llm(genesis))
    checks.register("event_store", lambda: _event_store(genesis))
    checks.register("session_store", lambda: _session_store(genesis))


async def _knowledge(genesis: Genesis) -> dict[str, Any]:
    return {"collections": await genesis.kb.health_check()}


async def _token_cache(genesis: Genesis) -> dict[str, Any]:
    l2 = await genesis.token_cache.l2_health(timeout_s=genesis.health_checks.timeout_s)
    details: dict[str, Any] = {"store": type(genesis.store).__name__, **l2}
    if l2["state"] == "ok" and l2["breaker"] != "closed":
        details["state"] = "degraded"  # answering again, but the circuit has not closed yet
    details.pop("latency_ms", None)  # the check's own latency is reported
    return details


async def _llm(genesis: Genesis) -> dict[str, Any]:
    backend = genesis.settings.llm.backend
    ping = getattr(genesis.backend, "ping", None)
    if backend == "extractive" or ping is None:
        return {"backend": backend}  # in-process: nothing to reach
    return {"backend": backend, **await ping()}


async def _event_store(genesis: Genesis) -> dict[str, Any]:
    store = await genesis.tracker.store()
    await asyncio.to_thread(store.usage, since=time.time())  # one real (empty) query
    stats = genesis.tracker.recorder.stats()
    return {"queued": stats.queued, "dropped": stats.dropped, "failed": stats.failed}


async def _session_store(genesis: Genesis) -> dict[str, Any]:
    await genesis.sessions.ping()
    return {"store": type(genesis.sessions).__name__}


async def readiness(genesis: Genesis, checks: HealthChecks) -> dict[str, Any]:
    """The ``/health/ready`` report; ``status`` is ok, degraded, down or starting."""
    began = time.perf_counter()
    if not genesis.serving:
        return {"status": "starting", "ready": False, "checks": {}, "elapsed_ms": 0.0}
    results = await checks.run()
    report: dict[str, Any] = {"status": overall_status(results), "ready": True}
    report["checks"] = results
    # The fields of the earlier report, kept for its readers.
    knowledge = results.get("knowledge", {})
    report["knowledge"] = "ok" if knowledge.get("state") == "ok" else "down"
    report["collections"] = knowledge.get("collections", {})
    if "token_cache" in results:
        report["token_cache"] = results["token_cache"]
    report["elapsed_ms"] = round((time.perf_counter() - began) * 1000, 3)
    return report


Probe = Callable[[str], Awaitable[Mapping[str, Any]]]


@dataclass
class _Last:
    at: float
    result: dict[str, Any]


class AgentChecks:
    """Runs ``probe(agent)`` under ``timeout_s``, at most once per ``interval_s`` per agent;
    concurrent callers for one agent share one run."""

    def __init__(
        self,
        probe: Probe,
        *,
        timeout_s: float,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._timeout_s = timeout_s
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, _Last] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def check(self, agent: str) -> dict[str, Any]:
        """``{"agent", "status": "ok"|"down", "latency_ms", "cached", "age_s", ...}``."""
        async with self._locks.setdefault(agent, asyncio.Lock()):
            last = self._last.get(agent)
            now = self._clock()
            if last is not None and now - last.at < self._interval_s:
                return {**last.result, "cached": True, "age_s": round(now - last.at, 3)}
            result = await self._run(agent)
            self._last[agent] = _Last(self._clock(), result)
            return {**result, "cached": False, "age_s": 0.0}

    async def _run(self, agent: str) -> dict[str, Any]:
        began = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                details = dict(await self._probe(agent))
            status = "ok"
        except TimeoutError:
            details, status = {"reason": f"no answer within {self._timeout_s:g} s"}, "down"
        except Exception as exc:  # the check reports a failing agent, it does not fail
            logger.warning("agent check of %s failed: %r", agent, exc)
            details, status = {"reason": f"{type(exc).__name__}: {exc}"[:_REASON_CHARS]}, "down"
        latency_ms = round((time.perf_counter() - began) * 1000.0, 3)
        return {"agent": agent, "status": status, "latency_ms": latency_ms, **details}


async def probe_agent(genesis: Genesis, agent: str) -> dict[str, Any]:
    """One real request through ``agent``'s pipeline and model (never abstaining: weak
    evidence for the probe's question must not skip the model call it is there to make)."""
    answer = await genesis.agent(agent).answer(PROBE_QUESTION, abstain=False)
    usage = answer.usage
    return {
        "model": answer.model,
        "extractive": answer.extractive,
        "sources": len(answer.sources),
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "answer_chars": len(answer.answer),
    }
