"""A PostgreSQL database for the whole run (created, then dropped), a schema per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from genesis.testing.postgres import postgres_available, temporary_database


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """The URL of a fresh database on 127.0.0.1:5432; a failure under CI=true if absent."""
    problem = postgres_available()
    if problem:
        # As tests/conftest.py: under CI a missing service fails the run.
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{problem} (required under CI=true)", pytrace=False)
        pytest.skip(problem)
    with temporary_database(prefix="genesis_events_test") as url:
        yield url


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    """A URL whose connections use a schema of their own (tests never see each other's rows)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_database)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{postgres_database}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
