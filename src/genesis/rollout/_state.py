"""Where every replica reads the rollout: one row per agent, a log of changes, and a lock.

The tables live in the shared SQL database (SQLite under ``GENESIS_HOME`` by default,
PostgreSQL by ``store.url``), so all processes and replicas read the same percentage; each
process caches it for at most ``rollout.cache_ttl_s`` (:class:`StateCache`).
Every call here blocks: run it off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from genesis.store import Database, migrate

Status = Literal["running", "paused", "rolled_back", "complete", "manual"]

_META = sa.MetaData()
STATE = sa.Table(
    "genesis_rollout_state",
    _META,
    sa.Column("agent", sa.String(64), primary_key=True),
    sa.Column("experiment", sa.String(512), nullable=False),
    sa.Column("percent", sa.Float, nullable=False),
    sa.Column("stage", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("stage_started_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
CHANGES = sa.Table(
    "genesis_rollout_changes",
    _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("agent", sa.String(64), nullable=False, index=True),
    sa.Column("experiment", sa.String(512), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("from_percent", sa.Float, nullable=False),
    sa.Column("to_percent", sa.Float, nullable=False),
    sa.Column("who", sa.String(128), nullable=False),
    sa.Column("why", sa.Text, nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),
)
LOCKS = sa.Table(
    "genesis_rollout_lock",
    _META,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
_STEPS = [[sa.schema.CreateTable(t, if_not_exists=True) for t in (STATE, CHANGES, LOCKS)]]


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


class SqlRolloutStore:
    """:class:`RolloutStore` on the shared SQL database."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        migrate(db, "rollout", _STEPS)

    def state(self, agent: str) -> RolloutState | None:
        with self._db.engine.connect() as conn:
            row = conn.execute(sa.select(STATE).where(STATE.c.agent == agent)).mappings().first()
        return _state_of(row) if row else None

    def states(self) -> dict[str, RolloutState]:
        with self._db.engine.connect() as conn:
            rows = conn.execute(sa.select(STATE)).mappings().all()
        return {row["agent"]: _state_of(row) for row in rows}

    def apply(self, state: RolloutState, change: Change) -> None:
        values = asdict(state)
        with self._db.engine.begin() as conn:
            updated = conn.execute(
                STATE.update().where(STATE.c.agent == state.agent).values(**values)
            ).rowcount
            if not updated:
                conn.execute(STATE.insert().values(**values))
            record = {**asdict(change), "evidence": json.dumps(change.evidence, default=str)}
            conn.execute(CHANGES.insert().values(**record))

    def changes(self, agent: str, limit: int = 100) -> list[Change]:
        query = (
            sa.select(CHANGES)
            .where(CHANGES.c.agent == agent)
            .order_by(CHANGES.c.ts.desc(), CHANGES.c.id.desc())
            .limit(limit)
        )
        with self._db.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_change_of(row) for row in rows]

    def try_lock(self, name: str, holder: str, ttl_s: float) -> bool:
        now = self._clock()
        renew = (
            LOCKS.update()
            .where(LOCKS.c.name == name)
            .where(sa.or_(LOCKS.c.expires_at < now, LOCKS.c.holder == holder))
            .values(holder=holder, expires_at=now + ttl_s)
        )
        try:
            with self._db.engine.begin() as conn:
                if conn.execute(renew).rowcount:
                    return True
                conn.execute(
                    LOCKS.insert().values(name=name, holder=holder, expires_at=now + ttl_s)
                )
            return True
        except IntegrityError:  # another holder's row: held and not expired
            return False

    def unlock(self, name: str, holder: str) -> None:
        with self._db.engine.begin() as conn:
            conn.execute(LOCKS.delete().where(LOCKS.c.name == name, LOCKS.c.holder == holder))

    def close(self) -> None:
        self._db.close()


def _state_of(row: Any) -> RolloutState:
    return RolloutState(**{k: row[k] for k in RolloutState.__dataclass_fields__})


def _change_of(row: Any) -> Change:
    fields = {k: row[k] for k in Change.__dataclass_fields__ if k != "evidence"}
    return Change(**fields, evidence=json.loads(row["evidence"]))


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
