"""The rollout's tables in the shared SQL database: state per agent, changes, locks."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from genesis.config import Settings
from genesis.rollout._state import Change, RolloutState
from genesis.store import Database, migrate, open_database

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


def open_rollout_store(settings: Settings | str) -> SqlRolloutStore:
    """The store on ``settings``' database (or a URL), owning its engine."""
    return SqlRolloutStore(open_database(settings))
