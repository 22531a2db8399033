"""The rollout state store: the same contract on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from genesis.rollout import SqlRolloutStore
from genesis.store import open_database
from genesis.testing.rollout_store_contract import RolloutStoreContract

PG_ADMIN = os.environ.get("GENESIS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def clock() -> list[float]:
    return [1_000.0]


class TestSqliteRolloutStore(RolloutStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path, clock: list[float]) -> Iterator[SqlRolloutStore]:
        store = SqlRolloutStore(open_database(f"sqlite:///{tmp_path}/g.db"), clock=lambda: clock[0])
        yield store
        store.close()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A fresh database of its own on the real PostgreSQL, dropped afterwards."""
    admin_url = "postgresql+psycopg://" + PG_ADMIN.split("://", 1)[1]
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"genesis_rollout_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no server here
        admin.dispose()
        if IN_CI:
            pytest.fail(f"PostgreSQL not reachable: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL not reachable: {type(exc).__name__}")
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.integration
class TestPostgresRolloutStore(RolloutStoreContract):
    @pytest.fixture
    def store(self, pg_url: str, clock: list[float]) -> Iterator[SqlRolloutStore]:
        db = open_database(pg_url)
        with db.engine.begin() as conn:  # each test starts from empty tables
            for table in (
                "genesis_rollout_state",
                "genesis_rollout_changes",
                "genesis_rollout_lock",
            ):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
            conn.execute(sa.text("DELETE FROM genesis_migrations WHERE component = 'rollout'"))
        store = SqlRolloutStore(db, clock=lambda: clock[0])
        yield store
        store.close()
