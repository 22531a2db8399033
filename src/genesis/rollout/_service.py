"""The rollout of each agent's fine-tuned model: assignment on the request path, and the
commands (start, advance, rollback, pause, set) and automatic mode that move it.

Request path: :meth:`Rollout.assign` reads the cached states (a dict; refreshed from the
database at most every ``cache_ttl_s`` off the loop) and hashes the unit: no I/O otherwise.
Commands and :meth:`Rollout.tick` block (database, statistics): run them off the loop.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from genesis.config import AgentProfile, RolloutSettings
from genesis.errors import RolloutError, UnknownAgentError
from genesis.events import EventStore, RequestEvent
from genesis.observability import record_rollout_state, record_rollout_verdict
from genesis.rollout._assign import Assigner, Assignment, Unit, experiment_name
from genesis.rollout._gates import Verdict, decide
from genesis.rollout._state import Change, RolloutState, RolloutStore, StateCache, moved
from genesis.rollout._stats import Arm, compare

logger = logging.getLogger(__name__)

AUTO_LOCK = "rollout-auto"
# The agent and assignment of the request in progress: a request that fails after its
# variant was chosen is still counted against that variant (the error-rate guardrail).
_current: ContextVar[tuple[str, Assignment] | None] = ContextVar("genesis_rollout", default=None)


def current_assignment() -> tuple[str, Assignment] | None:
    """``(agent, assignment)`` of this request, once :meth:`Rollout.assign` has run in it."""
    return _current.get()


class Rollout:
    """Staged rollouts of the configured agents' fine-tuned models."""

    def __init__(
        self,
        settings: RolloutSettings,
        agents: Mapping[str, AgentProfile],
        store: RolloutStore,
        events: EventStore | None = None,
        *,
        open_events: Callable[[], EventStore] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``events`` (or ``open_events``, called on first need) is where the statistics
        read the requests from."""
        self.settings = settings
        self._agents = dict(agents)
        self.store = store
        self._events_store = events
        self._open_events = open_events
        self._clock = clock
        self._assigner = Assigner(
            settings.secret.get_secret_value().encode(), settings.forced_users
        )
        self._cache = StateCache(self._read_states, settings.cache_ttl_s)
        self.holder = f"{socket.gethostname()}:{os.getpid()}"

    # -- request path --------------------------------------------------------------------

    async def assign(self, agent: str, unit: Unit) -> Assignment:
        """The variant ``unit`` gets for ``agent`` now (percentage at most ``cache_ttl_s`` old)."""
        states = await self._cache.states()
        found = self._assigner.assign(self.experiment(agent), unit, self._percent(agent, states))
        _current.set((agent, found))
        return found

    def _read_states(self) -> dict[str, RolloutState]:
        states = self.store.states()
        for agent in self._agents:
            state = states.get(agent)
            percent = self._percent(agent, states)
            record_rollout_state(agent, percent, state.stage if state else -1)
        return states

    def _percent(self, agent: str, states: Mapping[str, RolloutState]) -> float:
        state = states.get(agent)
        experiment = self.experiment(agent)
        if state is None or state.experiment != experiment:
            return self.settings.default_percent
        return state.percent

    # -- reading -------------------------------------------------------------------------

    def experiment(self, agent: str) -> str | None:
        finetuned = self.profile(agent).models.finetuned
        return experiment_name(agent, finetuned) if finetuned else None

    def profile(self, agent: str) -> AgentProfile:
        try:
            return self._agents[agent]
        except KeyError:
            known = ", ".join(sorted(self._agents))
            raise UnknownAgentError(f"unknown agent {agent!r}; known agents: {known}") from None

    def assign_units(self, agent: str, unit_ids: list[str]) -> list[Assignment]:
        """Blocking: the current assignment of each unit id (as a user id), read fresh."""
        percent = self._percent(agent, self.store.states())
        return self._assigner.assign_many(self.experiment(agent), unit_ids, percent)

    def state(self, agent: str) -> RolloutState | None:
        state = self.store.state(agent)
        return state if state is not None and state.experiment == self.experiment(agent) else None

    def evaluate(self, agent: str) -> Verdict:
        """The gates' verdict on the current stage's events."""
        state = self.state(agent)
        experiment = self.experiment(agent)
        if state is None or experiment is None:
            return Verdict("wait", ["no rollout running for this agent"])
        # The first cache_ttl_s of a stage may still carry the previous split: left out.
        since = state.stage_started_at + self.settings.cache_ttl_s
        finetuned, baseline = self.arms(agent, experiment, since)
        gates = self.settings.gates
        comparison = compare(
            finetuned,
            baseline,
            share=state.percent / 100.0,
            alpha=gates.alpha,
            mde=gates.mde,
            power=gates.power,
            cost_budget_ratio=gates.cost_budget_ratio,
            srm_p=gates.srm_p,
            look_every=gates.look_every,
        )
        verdict = decide(comparison, gates, self._clock() - state.stage_started_at)
        record_rollout_verdict(agent, verdict.kind)
        return verdict

    def arms(self, agent: str, experiment: str, since: float | None = None) -> tuple[Arm, Arm]:
        events = self._events(agent, experiment, since)
        scores = self._feedback(events)
        finetuned = [e for e in events if e.variant == "finetuned"]
        baseline = [e for e in events if e.variant == "baseline"]
        return Arm.of(finetuned, scores), Arm.of(baseline, scores)

    @property
    def events(self) -> EventStore | None:
        if self._events_store is None and self._open_events is not None:
            self._events_store = self._open_events()
        return self._events_store

    def _events(self, agent: str, experiment: str, since: float | None) -> list[RequestEvent]:
        store = self.events
        if store is None:
            return []
        found = store.events(agent=agent, experiment=experiment, since=since)
        return sorted(found, key=lambda e: e.ts)

    def _feedback(self, events: list[RequestEvent]) -> dict[str, float]:
        store = self.events
        if store is None or not events:
            return {}
        found = store.feedback([e.request_id for e in events])
        return {rid: f.score for rid, f in found.items()}

    def status(self, agent: str) -> dict[str, Any]:
        state = self.state(agent)
        verdict = self.evaluate(agent)
        return {
            "agent": agent,
            "experiment": self.experiment(agent),
            "percent": self._percent(agent, self.store.states()),
            "stages": self.settings.stages,
            "state": None if state is None else _state_dict(state),
            "verdict": verdict.evidence(),
            "changes": [c.as_dict() for c in self.store.changes(agent, limit=20)],
        }

    # -- commands ------------------------------------------------------------------------

    def start(self, agent: str, who: str, why: str = "started") -> RolloutState:
        """First stage (or resume a paused rollout at its stage)."""
        current = self.state(agent)
        if current is not None and current.status == "running":
            raise RolloutError(f"the rollout of {agent!r} is already running")
        if current is not None and current.status == "paused":
            return self._move(current, "resume", current.percent, current.stage, who, why)
        return self._to_stage(agent, 0, "start", who, why)

    def advance(
        self, agent: str, who: str, why: str = "advanced by hand", evidence: Verdict | None = None
    ) -> RolloutState:
        current = self._require(agent)
        stage = self._next_stage(current)
        if stage is None:
            raise RolloutError(f"the rollout of {agent!r} is already at 100%")
        return self._to_stage(agent, stage, "advance", who, why, evidence)

    def rollback(
        self,
        agent: str,
        who: str,
        why: str = "rolled back by hand",
        evidence: Verdict | None = None,
    ) -> RolloutState:
        current = self._require(agent)
        state = moved(current, status="rolled_back")
        return self._move(state, "rollback", 0.0, -1, who, why, evidence)

    def pause(self, agent: str, who: str, why: str = "paused by hand") -> RolloutState:
        current = self._require(agent)
        return self._move(
            moved(current, status="paused"), "pause", current.percent, current.stage, who, why
        )

    def set(self, agent: str, percent: float, who: str, why: str = "set by hand") -> RolloutState:
        """Any percentage by hand; the automatic mode leaves a ``manual`` rollout alone until
        ``start`` resumes it."""
        if not (math.isfinite(percent) and 0 <= percent <= 100):
            raise RolloutError(f"percent must be between 0 and 100, got {percent}")
        experiment = self._experiment_or_fail(agent)
        current = self.state(agent) or self._fresh(agent, experiment)
        stages = self.settings.stages
        stage = stages.index(percent) if percent in stages else -1
        return self._move(moved(current, status="manual"), "set", percent, stage, who, why)

    def tick(self, who: str = "auto") -> dict[str, str]:
        """One pass of the automatic mode over the running rollouts; returns each agent's
        verdict. Callers hold the :data:`AUTO_LOCK` (see :meth:`tick_locked`)."""
        done: dict[str, str] = {}
        for agent, state in self.store.states().items():
            if agent not in self._agents or state.status != "running":
                continue
            if state.experiment != self.experiment(agent):
                continue
            verdict = self.evaluate(agent)
            done[agent] = verdict.kind
            why = "; ".join(verdict.reasons)
            if verdict.kind == "advance":
                self.advance(agent, who, why, verdict)
            elif verdict.kind == "rollback":
                self.rollback(agent, who, why, verdict)
        return done

    def tick_locked(self, who: str = "auto") -> dict[str, str] | None:
        """:meth:`tick` under the database lock: None when another replica holds it."""
        if not self.store.try_lock(AUTO_LOCK, self.holder, self.settings.lock_ttl_s):
            return None
        return self.tick(who)

    # -- internals -----------------------------------------------------------------------

    def _require(self, agent: str) -> RolloutState:
        self._experiment_or_fail(agent)
        state = self.state(agent)
        if state is None:
            raise RolloutError(f"no rollout of {agent!r}: `genesis rollout start {agent}` first")
        return state

    def _experiment_or_fail(self, agent: str) -> str:
        experiment = self.experiment(agent)
        if experiment is None:
            raise RolloutError(f"agent {agent!r} has no fine-tuned model to roll out")
        return experiment

    def _fresh(self, agent: str, experiment: str) -> RolloutState:
        now = self._clock()
        percent = self.settings.default_percent
        return RolloutState(agent, experiment, percent, -1, "manual", now, now)

    def _next_stage(self, state: RolloutState) -> int | None:
        later = [i for i, p in enumerate(self.settings.stages) if p > state.percent]
        return later[0] if later else None

    def _to_stage(
        self,
        agent: str,
        stage: int,
        action: str,
        who: str,
        why: str,
        evidence: Verdict | None = None,
    ) -> RolloutState:
        experiment = self._experiment_or_fail(agent)
        current = self.state(agent) or self._fresh(agent, experiment)
        percent = self.settings.stages[stage]
        status = "complete" if percent >= 100 else "running"
        return self._move(moved(current, status=status), action, percent, stage, who, why, evidence)

    def _move(
        self,
        state: RolloutState,
        action: str,
        percent: float,
        stage: int,
        who: str,
        why: str,
        evidence: Verdict | None = None,
    ) -> RolloutState:
        now = self._clock()
        stage_changed = percent != state.percent or action in ("start", "resume")
        new = moved(
            state,
            percent=percent,
            stage=stage,
            updated_at=now,
            stage_started_at=now if stage_changed else state.stage_started_at,
        )
        proof = evidence.evidence() if evidence is not None else {}
        change = Change(
            now, state.agent, state.experiment, action, state.percent, percent, who, why, proof
        )
        self.store.apply(new, change)
        self._cache.invalidate()
        logger.info(
            "rollout %s: %s %.2f%% -> %.2f%% by %s (%s)",
            state.agent,
            action,
            state.percent,
            percent,
            who,
            why,
            extra={"agent": state.agent, "action": action, "who": who},
        )
        record_rollout_state(state.agent, percent, stage)
        return new


def _state_dict(state: RolloutState) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(state)
