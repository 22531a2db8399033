"""A throwaway PostgreSQL database for tests: created on entry, dropped on exit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def postgres_available(admin_url: str = DEFAULT_ADMIN_URL) -> str | None:
    """None when the server answers, else why not (for a skip or, under CI, a failure)."""
    engine = sa.create_engine(admin_url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure to connect means "no PostgreSQL here"
        return f"PostgreSQL not reachable at {admin_url}: {type(exc).__name__}"
    finally:
        engine.dispose()
    return None


@contextmanager
def temporary_database(
    admin_url: str = DEFAULT_ADMIN_URL, prefix: str = "genesis_test"
) -> Iterator[str]:
    """Create a fresh database, yield its URL, drop it (with any open sessions) afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
