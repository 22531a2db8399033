"""Readiness checks (concurrent, each under a timeout) and the rate-limited agent check."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from genesis._readiness import AgentChecks
from genesis.observability import HealthChecks, overall_status


async def test_checks_run_concurrently() -> None:
    # Each check waits for the other: run one after the other, both would time out.
    first, second = asyncio.Event(), asyncio.Event()

    async def a() -> dict[str, Any]:
        first.set()
        await second.wait()
        return {}

    async def b() -> dict[str, Any]:
        second.set()
        await first.wait()
        return {"detail": 1}

    checks = HealthChecks(timeout_s=5.0)
    checks.register("a", a)
    checks.register("b", b, critical=True)
    results = await checks.run()
    assert results["a"]["state"] == results["b"]["state"] == "ok"
    assert results["b"]["detail"] == 1 and results["b"]["critical"] is True
    assert overall_status(results) == "ok"


async def test_a_hung_or_failing_check_is_down_with_its_reason() -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    async def fails() -> None:
        raise ConnectionError("refused\nsecond line")

    checks = HealthChecks(timeout_s=5.0)
    checks.register("hangs", hangs, timeout_s=0.05)
    checks.register("fails", fails)
    results = await checks.run()
    assert results["hangs"]["state"] == results["fails"]["state"] == "down"
    assert results["hangs"]["reason"] == "no answer within 0.05 s"
    assert results["fails"]["reason"] == "ConnectionError: refused"
    assert overall_status(results) == "degraded"  # neither is critical


async def test_status_is_down_only_for_a_critical_dependency() -> None:
    async def down() -> Mapping[str, Any]:
        return {"state": "down"}

    async def absent() -> Mapping[str, Any]:
        return {"state": "none"}

    checks = HealthChecks()
    checks.register("optional", absent)
    checks.register("store", down, critical=True)
    assert overall_status(await checks.run()) == "down"
    checks.unregister("store")
    assert checks.names == ["optional"]
    assert overall_status(await checks.run()) == "ok"


class _Probe:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, agent: str) -> dict[str, Any]:
        self.calls += 1
        await self.release.wait()
        if self.fail:
            raise RuntimeError("model said no")
        return {"model": f"{agent}-model"}


async def test_an_agent_is_probed_at_most_once_per_interval() -> None:
    now = [100.0]
    probe = _Probe()
    checks = AgentChecks(probe, timeout_s=5.0, interval_s=30.0, clock=lambda: now[0])
    first = await checks.check("support")
    assert first["status"] == "ok" and first["model"] == "support-model"
    assert first["cached"] is False
    now[0] += 10.0
    again = await checks.check("support")
    assert again["cached"] is True and again["age_s"] == 10.0 and probe.calls == 1
    now[0] += 25.0
    probe.fail = True
    failed = await checks.check("support")
    assert probe.calls == 2
    assert failed["status"] == "down" and failed["reason"] == "RuntimeError: model said no"


async def test_concurrent_checks_of_one_agent_share_one_probe() -> None:
    probe = _Probe()
    probe.release.clear()
    checks = AgentChecks(probe, timeout_s=5.0, interval_s=30.0)
    waiting = [asyncio.create_task(checks.check("support")) for _ in range(3)]
    await asyncio.sleep(0)
    probe.release.set()
    results = await asyncio.gather(*waiting)
    assert probe.calls == 1
    assert [r["cached"] for r in results] == [False, True, True]


async def test_a_probe_past_its_timeout_is_down() -> None:
    probe = _Probe()
    probe.release.clear()
    checks = AgentChecks(probe, timeout_s=0.05, interval_s=0.0)
    result = await checks.check("support")
    assert result["status"] == "down" and result["reason"] == "no answer within 0.05 s"
