"""The SQL event store passes the EventStore contract on SQLite and on real PostgreSQL."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from genesis.events import EventStore, SqlEventStore, open_event_store
from genesis.store import open_database
from genesis.testing.event_store_contract import EventStoreContract, event


class TestSqliteEventStore(EventStoreContract):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> Callable[[], EventStore]:
        url = f"sqlite:///{tmp_path / 'genesis.db'}"
        return lambda: open_event_store(url)


@pytest.mark.integration
class TestPostgresEventStore(EventStoreContract):
    @pytest.fixture
    def open_store(self, postgres_url: str) -> Callable[[], EventStore]:
        return lambda: open_event_store(postgres_url)


def test_tables_and_indexes_are_created(tmp_path: Path) -> None:
    store = open_event_store(f"sqlite:///{tmp_path / 'g.db'}")
    inspector = sa.inspect(store.database.engine)
    assert {"events", "feedback"} <= set(inspector.get_table_names())
    indexed = {tuple(ix["column_names"]) for ix in inspector.get_indexes("events")}
    assert {("agent", "ts"), ("session_id",), ("experiment", "ts")} <= indexed
    store.close()


def test_a_second_store_on_the_same_database_migrates_nothing(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'g.db'}")
    first = SqlEventStore(db, owns_database=False)
    first.write([event(request_id="r")])
    SqlEventStore(db, owns_database=False)  # the migration ran once; the row is still there
    assert [e.request_id for e in first.events()] == ["r"]
    db.close()


def _open_at_once(url: str, barrier: Any, errors: Any) -> None:
    barrier.wait()  # every process opens the fresh database at the same moment
    try:
        open_event_store(url).close()
        from genesis.rollout import SqlRolloutStore

        db = open_database(url)
        SqlRolloutStore(db)
        db.close()
    except Exception as exc:  # reported to the test, which names it
        errors.put(f"{type(exc).__name__}: {exc}"[:300])


@pytest.mark.parametrize("attempt", range(3))
def test_workers_opening_a_fresh_database_at_once_all_start(tmp_path: Path, attempt: int) -> None:
    """`genesis serve --workers N` on a fresh home: every worker creates the tables and runs
    the migrations at start-up; the ones that lose the race must start all the same."""
    ctx = multiprocessing.get_context("spawn")
    url = f"sqlite:///{tmp_path / 'genesis.db'}"
    barrier, errors = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_open_at_once, args=(url, barrier, errors)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    assert all(p.exitcode == 0 for p in procs)
    db = open_database(url)
    with db.engine.connect() as conn:
        versions = dict(
            conn.execute(sa.text("SELECT component, version FROM genesis_migrations")).all()
        )
    db.close()
    assert versions == {"events": 1, "rollout": 1}
