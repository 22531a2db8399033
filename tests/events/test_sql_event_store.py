"""The SQL event store passes the EventStore contract on SQLite and on real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
