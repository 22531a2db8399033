"""The event store on SQLAlchemy Core: SQLite by default, PostgreSQL by ``store.url``.

Two tables, created by :func:`genesis.store.migrate` under the component ``events``:
``events`` (one row per request, ``request_id`` unique) and ``feedback`` (one row per request
id, the latest score wins). Usage breakdowns are a GROUP BY in SQL, never a scan in Python.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from datetime import UTC, datetime
from typing import Any, get_args

import sqlalchemy as sa

from genesis.config import Settings
from genesis.events._model import Feedback, RequestEvent, UsageGroup, UsageRow
from genesis.store import Database, migrate, open_database

_META = sa.MetaData()
# Bounded like the API's inputs: a model id or a session id longer than this is refused early.
EVENTS = sa.Table(
    "events",
    _META,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("request_id", sa.String(64), nullable=False, unique=True),
    sa.Column("ts", sa.Float(precision=53), nullable=False),
    # The UTC date of ``ts``, written with the row: ``GROUP BY day`` is then the same
    # plain column on SQLite and PostgreSQL, and indexable.
    sa.Column("day", sa.String(10), nullable=False),
    sa.Column("agent", sa.String(64), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("latency_ms", sa.Float(precision=53), nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("cached_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.Float(precision=53), nullable=False),
    sa.Column("session_id", sa.String(128)),
    sa.Column("key_id", sa.String(64)),
    sa.Column("experiment", sa.String(128)),
    sa.Column("variant", sa.String(16)),
    sa.Column("unit_kind", sa.String(16)),
    sa.Column("fallback", sa.Boolean, nullable=False),
    sa.Column("fallback_reason", sa.String(64)),
    sa.Column("cache_l1", sa.Integer, nullable=False),
    sa.Column("cache_l2", sa.Integer, nullable=False),
    sa.Column("cache_miss", sa.Integer, nullable=False),
    sa.Column("abstained", sa.Boolean, nullable=False),
    sa.Column("error_type", sa.String(128)),
    sa.Index("ix_events_agent_ts", "agent", "ts"),
    sa.Index("ix_events_session", "session_id"),
    sa.Index("ix_events_experiment_ts", "experiment", "ts"),
    sa.Index("ix_events_ts", "ts"),
)
FEEDBACK = sa.Table(
    "feedback",
    _META,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("score", sa.Float(precision=53), nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("ts", sa.Float(precision=53), nullable=False),
)
_MIGRATIONS = [
    [sa.schema.CreateTable(EVENTS, if_not_exists=True)]
    + [sa.schema.CreateIndex(ix, if_not_exists=True) for ix in EVENTS.indexes]
    + [sa.schema.CreateTable(FEEDBACK, if_not_exists=True)],
]
_FIELDS = [f.name for f in fields(RequestEvent)]
_GROUPS: tuple[str, ...] = get_args(UsageGroup)


class SqlEventStore:
    """:class:`genesis.events.EventStore` on one :class:`genesis.store.Database`.

    Every call blocks (SQL): run it in a thread. ``close()`` disposes the engine when the
    store opened it (``owns_database``)."""

    def __init__(self, db: Database, *, owns_database: bool = True) -> None:
        self._db = db
        self._owns = owns_database
        migrate(db, "events", _MIGRATIONS)

    @property
    def database(self) -> Database:
        return self._db

    def write(self, events: Sequence[RequestEvent]) -> None:
        rows = _unique_rows(events)
        if not rows:
            return
        statement = _insert(self._db.kind)(EVENTS).on_conflict_do_nothing(
            index_elements=["request_id"]
        )
        with self._db.engine.begin() as conn:
            conn.execute(statement, rows)

    def events(
        self,
        *,
        agent: str | None = None,
        session_id: str | None = None,
        experiment: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[RequestEvent]:
        where = _filters(agent, session_id, experiment, since, until)
        query = sa.select(*(EVENTS.c[name] for name in _FIELDS)).where(*where)
        with self._db.engine.connect() as conn:
            rows = conn.execute(query.order_by(EVENTS.c.ts, EVENTS.c.id)).all()
        return [RequestEvent(**row._asdict()) for row in rows]

    def usage(
        self,
        *,
        by: Sequence[UsageGroup] = (),
        agent: str | None = None,
        session_id: str | None = None,
        key_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[UsageRow]:
        groups = _check_groups(by)
        keys = [EVENTS.c[g] for g in groups]
        sums = [
            sa.func.count().label("requests"),
            *(
                sa.func.coalesce(sa.func.sum(EVENTS.c[c]), 0).label(c)
                for c in ("prompt_tokens", "cached_tokens", "completion_tokens", "cost_usd")
            ),
        ]
        where = _filters(agent, session_id, None, since, until)
        if key_id is not None:
            where.append(EVENTS.c.key_id == key_id)
        query = sa.select(*keys, *sums).where(*where)
        query = query.group_by(*keys).order_by(*keys) if keys else query
        with self._db.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_usage_row(groups, row._asdict()) for row in rows if row.requests]

    def add_feedback(self, request_id: str, score: float, comment: str | None = None) -> bool:
        values = {"request_id": request_id, "score": score, "comment": comment, "ts": time.time()}
        upsert = _insert(self._db.kind)(FEEDBACK).values(**values)
        upsert = upsert.on_conflict_do_update(
            index_elements=["request_id"],
            set_={
                "score": upsert.excluded.score,
                "comment": upsert.excluded.comment,
                "ts": upsert.excluded.ts,
            },
        )
        with self._db.engine.begin() as conn:
            known = conn.execute(
                sa.select(EVENTS.c.id).where(EVENTS.c.request_id == request_id)
            ).first()
            if known is None:
                return False
            conn.execute(upsert)
        return True

    def feedback(self, request_ids: Sequence[str]) -> dict[str, Feedback]:
        out: dict[str, Feedback] = {}
        ids = list(dict.fromkeys(request_ids))
        with self._db.engine.connect() as conn:
            # Chunked: an IN list of thousands of parameters hits SQLite's variable limit.
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = conn.execute(sa.select(FEEDBACK).where(FEEDBACK.c.request_id.in_(chunk)))
                for row in rows:
                    out[row.request_id] = Feedback(**row._asdict())
        return out

    def close(self) -> None:
        if self._owns:
            self._db.close()


def _unique_rows(events: Sequence[RequestEvent]) -> list[dict[str, Any]]:
    """Rows to insert, the first of each request id only (the contract: the first wins)."""
    rows: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.request_id not in rows:
            row = asdict(event)
            row["day"] = datetime.fromtimestamp(event.ts, UTC).date().isoformat()
            rows[event.request_id] = row
    return list(rows.values())


def _filters(
    agent: str | None,
    session_id: str | None,
    experiment: str | None,
    since: float | None,
    until: float | None,
) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    for column, value in (("agent", agent), ("session_id", session_id), ("experiment", experiment)):
        if value is not None:
            where.append(EVENTS.c[column] == value)
    if since is not None:
        where.append(EVENTS.c.ts >= since)
    if until is not None:
        where.append(EVENTS.c.ts < until)
    return where


def _check_groups(by: Sequence[str]) -> list[UsageGroup]:
    unknown = [g for g in by if g not in _GROUPS]
    if unknown:
        raise ValueError(f"cannot group usage by {unknown}; choose among {', '.join(_GROUPS)}")
    return list(dict.fromkeys(by))  # type: ignore[arg-type]


def _usage_row(groups: list[UsageGroup], row: dict[str, Any]) -> UsageRow:
    return UsageRow(
        group={g: row[g] for g in groups},
        requests=int(row["requests"]),
        prompt_tokens=int(row["prompt_tokens"]),
        cached_tokens=int(row["cached_tokens"]),
        completion_tokens=int(row["completion_tokens"]),
        cost_usd=float(row["cost_usd"]),
    )


def _insert(kind: str) -> Any:
    """The dialect's ``insert`` (with ON CONFLICT). Imported here: the PostgreSQL dialect
    costs ~70 ms to import, which a SQLite store (and every CLI start) should not pay."""
    if kind == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def open_event_store(settings: Settings | str) -> SqlEventStore:
    """The event store of ``settings`` (``store.url``, else SQLite under the home) or a URL."""
    return SqlEventStore(open_database(settings))
