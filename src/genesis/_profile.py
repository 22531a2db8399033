"""``genesis profile``: one request through the in-process pipeline, N times, as a waterfall.

Each run is timed like a server request (a :class:`~genesis.observability.Waterfall` around
``Genesis.ask``, plus the serialization of the answer); the report gives each stage's median
and p95 over the runs, the total's, and ``other_ms``: the total median minus the sum of the
stage medians. So the stage medians plus ``other_ms`` are the total median, and ``other_ms``
says how much of the median request no stage explains (gaps between stages, and the
difference between a median of sums and a sum of medians); it is reported, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic_core import to_json

from genesis.app import Genesis
from genesis.observability import STAGE_ORDER, begin_waterfall, end_waterfall


@dataclass(frozen=True, slots=True)
class StageStats:
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True, slots=True)
class ProfileReport:
    question: str
    agent: str
    runs: int
    stages: dict[str, StageStats]
    total: StageStats
    other_ms: float
    unmeasured_p50_ms: float  # median over runs of each run's own remainder

    def as_json(self) -> dict[str, object]:
        return {
            "question": self.question,
            "agent": self.agent,
            "runs": self.runs,
            "stages": {k: _stats_json(v) for k, v in self.stages.items()},
            "total": _stats_json(self.total),
            "other_ms": round(self.other_ms, 3),
            "unmeasured_p50_ms": round(self.unmeasured_p50_ms, 3),
        }


def _stats_json(stats: StageStats) -> dict[str, float]:
    return {"p50_ms": round(stats.p50_ms, 3), "p95_ms": round(stats.p95_ms, 3)}


async def run_once(
    genesis: Genesis, question: str, agent: str | None
) -> tuple[str, dict[str, float]]:
    """One request's waterfall (``{stage: ms, "other": ms, "total": ms}``) and its agent."""
    waterfall, token = begin_waterfall()
    try:
        result = await genesis.ask(question, agent=agent)
        waterfall.add_pipeline(result.answer.timings_ms)
        with waterfall.stage("serialize"):
            to_json(result)
        return result.agent, waterfall.finish()
    finally:
        end_waterfall(token)


async def profile(
    genesis: Genesis, question: str, *, agent: str | None = None, runs: int = 20, warmup: int = 1
) -> ProfileReport:
    """Warm up ``warmup`` times (untimed: first-use loading is not the steady state), then
    time ``runs`` requests."""
    if runs < 1:
        raise ValueError("runs must be at least 1")
    for _ in range(warmup):
        await genesis.ask(question, agent=agent)
    samples = [await run_once(genesis, question, agent) for _ in range(runs)]
    return summarize(question, samples[-1][0], [s for _, s in samples])


def summarize(question: str, agent: str, samples: list[dict[str, float]]) -> ProfileReport:
    names = [n for n in STAGE_ORDER if any(n in s for s in samples)]
    names += sorted({n for s in samples for n in s} - set(names) - {"other", "total"})
    stages = {n: _stats([s.get(n, 0.0) for s in samples]) for n in names}
    total = _stats([s["total"] for s in samples])
    other = total.p50_ms - sum(st.p50_ms for st in stages.values())
    unmeasured = float(np.median([s.get("other", 0.0) for s in samples]))
    return ProfileReport(question, agent, len(samples), stages, total, other, unmeasured)


def _stats(values: list[float]) -> StageStats:
    array = np.asarray(values, dtype=float)
    return StageStats(float(np.percentile(array, 50)), float(np.percentile(array, 95)))
