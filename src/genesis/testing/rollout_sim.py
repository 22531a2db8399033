"""Simulated traffic with a known truth, for the rollout's tests, report demo and docs.

:class:`MemoryEventStore` keeps :class:`RequestEvent` in a list (the EventStore contract,
without durability); :func:`simulate_events` draws requests whose units are assigned by the
real :class:`Assigner`, with per-variant success rates, latencies and costs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genesis.events import Feedback, RequestEvent, Variant
from genesis.rollout import Assigner, Unit


class MemoryEventStore:
    """An in-process :class:`genesis.events.EventStore`."""

    def __init__(self) -> None:
        self._events: dict[str, RequestEvent] = {}
        self._feedback: dict[str, Feedback] = {}

    def write(self, events: Sequence[RequestEvent]) -> None:
        for event in events:
            self._events.setdefault(event.request_id, event)

    def events(
        self,
        *,
        agent: str | None = None,
        session_id: str | None = None,
        experiment: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[RequestEvent]:
        found = [
            e
            for e in self._events.values()
            if (agent is None or e.agent == agent)
            and (session_id is None or e.session_id == session_id)
            and (experiment is None or e.experiment == experiment)
            and (since is None or e.ts >= since)
            and (until is None or e.ts < until)
        ]
        return sorted(found, key=lambda e: e.ts)

    def add_feedback(self, request_id: str, score: float, comment: str | None = None) -> bool:
        if request_id not in self._events:
            return False
        self._feedback[request_id] = Feedback(request_id, score, comment, 0.0)
        return True

    def feedback(self, request_ids: Sequence[str]) -> dict[str, Feedback]:
        return {r: self._feedback[r] for r in request_ids if r in self._feedback}

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Truth:
    """One variant's true behaviour."""

    success: float = 0.85
    error: float = 0.01
    fallback: float = 0.02
    latency_median_ms: float = 400.0
    cost_usd: float = 0.002


def simulate_events(
    assigner: Assigner,
    *,
    agent: str,
    experiment: str,
    percent: float,
    requests: int,
    start_ts: float,
    finetuned: Truth,
    baseline: Truth,
    users: int = 5_000,
    drop_finetuned: float = 0.0,
    seed: int = 0,
    duration_s: float = 3600.0,
) -> list[RequestEvent]:
    """``requests`` events spread over ``duration_s`` from ``start_ts``. ``drop_finetuned``
    loses that share of the fine-tuned events (a broken pipeline: sample-ratio mismatch)."""
    rng = np.random.default_rng(seed)
    user_ids = [f"user-{seed}-{i}" for i in range(users)]
    variants = {u: assigner.assign(experiment, Unit("user", u), percent).variant for u in user_ids}
    picks = rng.integers(0, users, requests)
    times = start_ts + np.sort(rng.uniform(0, duration_s, requests))
    draws = rng.random((requests, 4))
    events = []
    for i in range(requests):
        variant: Variant = variants[user_ids[picks[i]]]
        if variant == "finetuned" and draws[i, 3] < drop_finetuned:
            continue
        truth = finetuned if variant == "finetuned" else baseline
        events.append(_event(agent, experiment, variant, truth, float(times[i]), draws[i], rng))
    return events


def _event(
    agent: str,
    experiment: str,
    variant: Variant,
    truth: Truth,
    ts: float,
    draw: np.ndarray,
    rng: np.random.Generator,
) -> RequestEvent:
    error = bool(draw[0] < truth.error)
    ok = not error and bool(draw[1] < truth.success / (1 - truth.error))
    return RequestEvent(
        ts=ts,
        request_id=uuid.uuid4().hex,
        agent=agent,
        model=variant,
        outcome="error" if error else ("ok" if ok else "abstained"),
        latency_ms=float(truth.latency_median_ms * rng.lognormal(0.0, 0.4)),
        cost_usd=float(truth.cost_usd * rng.lognormal(0.0, 0.2)),
        experiment=experiment,
        variant=variant,
        unit_kind="user",
        fallback=bool(draw[2] < truth.fallback),
        abstained=not ok and not error,
    )
