"""Where every replica reads the rollout: one row per agent, a log of changes, and a lock.

The store (:class:`RolloutStore`; the SQL one in ``_sql.py``) lives in the shared database
(SQLite under ``GENESIS_HOME`` by default, PostgreSQL by ``store.url``), so all processes
and replicas read the same percentage; each process caches it for at most
``rollout.cache_ttl_s`` (:class:`StateCache`). Store calls block: run them off the loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol

Status = Literal["running", "paused", "rolled_back", "complete", "manual"]


@dataclass(frozen=True, slots=True)
class RolloutState:
    """An agent's rollout: ``stage`` indexes ``rollout.stages`` (-1: set by hand, off-plan)."""

    agent: str
    experiment: str
    percent: float
    stage: int
    status: Status
    stage_started_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Change:
    """One recorded change: who, when, why, and the evidence it was based on."""

    ts: float
    agent: str
    experiment: str
    action: str
    from_percent: float
    to_percent: float
    who: str
    why: str
    evidence: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RolloutStore(Protocol):
    """Contract (``genesis.testing.rollout_store_contract``): ``apply`` writes the new state
    and its change record atomically; ``states`` returns every agent's state; ``changes`` is
    newest first; ``try_lock`` grants a named lock to one holder until it expires (the holder
    may renew it) and ``unlock`` releases only the holder's own lock. Every call blocks."""

    def state(self, agent: str) -> RolloutState | None: ...

    def states(self) -> dict[str, RolloutState]: ...

    def apply(self, state: RolloutState, change: Change) -> None: ...

    def changes(self, agent: str, limit: int = 100) -> list[Change]: ...

    def try_lock(self, name: str, holder: str, ttl_s: float) -> bool: ...

    def unlock(self, name: str, holder: str) -> None: ...


class LazyRolloutStore:
    """A :class:`RolloutStore` opened on first use (a CLI command or a server that never
    reads the rollout does not connect to the database, nor import SQLAlchemy)."""

    def __init__(self, opener: Callable[[], RolloutStore]) -> None:
        self._opener = opener
        self._store: RolloutStore | None = None
        self._lock = threading.Lock()

    def _get(self) -> RolloutStore:
        with self._lock:
            if self._store is None:
                self._store = self._opener()
            return self._store

    def state(self, agent: str) -> RolloutState | None:
        return self._get().state(agent)

    def states(self) -> dict[str, RolloutState]:
        return self._get().states()

    def apply(self, state: RolloutState, change: Change) -> None:
        self._get().apply(state, change)

    def changes(self, agent: str, limit: int = 100) -> list[Change]:
        return self._get().changes(agent, limit)

    def try_lock(self, name: str, holder: str, ttl_s: float) -> bool:
        return self._get().try_lock(name, holder, ttl_s)

    def unlock(self, name: str, holder: str) -> None:
        self._get().unlock(name, holder)

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        close = getattr(store, "close", None)
        if close is not None:
            close()


class StateCache:
    """Every agent's state, re-read from the store at most every ``ttl_s`` seconds: the
    request path reads a dict; one thread hop per ``ttl_s`` per process refreshes it, so all
    replicas follow a change within ``ttl_s`` plus one read."""

    def __init__(
        self,
        read: Callable[[], dict[str, RolloutState]],
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ttl = ttl_s
        self._clock = clock
        self._states: dict[str, RolloutState] = {}
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def states(self) -> dict[str, RolloutState]:
        if self._clock() - self._read_at < self._ttl:
            return self._states
        async with self._lock:  # one read per refresh, however many requests wait
            if self._clock() - self._read_at >= self._ttl:
                self._states = await asyncio.to_thread(self._read)
                self._read_at = self._clock()
        return self._states

    def invalidate(self) -> None:
        self._read_at = float("-inf")


def moved(state: RolloutState, **changes: Any) -> RolloutState:
    return replace(state, **changes)


def as_dicts(changes: Sequence[Change]) -> list[dict[str, Any]]:
    return [c.as_dict() for c in changes]
