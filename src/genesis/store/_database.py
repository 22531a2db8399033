"""One SQLAlchemy engine per process, and versioned migrations per component."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateTable

from genesis.config import Settings, redact_url
from genesis.errors import ConfigError

logger = logging.getLogger(__name__)
T = TypeVar("T")

_META = sa.MetaData()
_MIGRATIONS = sa.Table(
    "genesis_migrations",
    _META,
    sa.Column("component", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)


class Database:
    """An engine and what it points at. ``kind`` is ``sqlite`` or ``postgresql``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.kind = engine.dialect.name
        # IF NOT EXISTS, not create_all's look-then-create: workers starting together on a
        # fresh database each create it, and the loser of a look-then-create would fail.
        _with_retries(
            lambda conn: conn.execute(CreateTable(_MIGRATIONS, if_not_exists=True)), engine
        )

    def __repr__(self) -> str:
        return f"Database({redact_url(str(self.engine.url))!r})"

    def close(self) -> None:
        self.engine.dispose()


def store_url(settings: Settings) -> str:
    """``store.url`` when set, else a SQLite file under the home folder."""
    if settings.store.url is not None:
        return settings.store.url.get_secret_value()
    return f"sqlite:///{settings.home_path() / 'genesis.db'}"


def open_database(settings: Settings | str) -> Database:
    """The database for ``settings`` (or a URL): ``sqlite:///path`` or
    ``postgresql://user@host:5432/db`` (driven by psycopg 3)."""
    url = settings if isinstance(settings, str) else store_url(settings)
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    elif url.startswith("postgresql+psycopg://"):
        engine = sa.create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)
    else:
        raise ConfigError(
            f"store.url must be sqlite:///PATH or postgresql://..., got {redact_url(url)!r}"
        )
    return Database(engine)


def _sqlite_pragmas(connection: object, _record: object) -> None:
    # WAL: the server's workers read while one of them writes; NORMAL sync is durable across a
    # process crash (not a power cut), which is what an analytics log needs.
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


Statement = sa.schema.ExecutableDDLElement | str


def migrate(db: Database, component: str, steps: Sequence[Sequence[Statement]]) -> int:
    """Bring ``component``'s tables to ``len(steps)``: step *i* (a list of DDL statements,
    each safe to run again: ``IF NOT EXISTS``) runs once, in one transaction with the version
    bump. Returns the version reached. Processes migrating at once (workers starting on a fresh
    database): a loser's transaction fails (the same version inserted twice, or SQLite's
    write lock taken after it read) and it starts again, reading the version the winner left.
    """
    return _with_retries(lambda conn: _migrate(conn, component, steps), db.engine)


def _migrate(conn: sa.Connection, component: str, steps: Sequence[Sequence[Statement]]) -> int:
    row = conn.execute(
        sa.select(_MIGRATIONS.c.version).where(_MIGRATIONS.c.component == component)
    ).first()
    version = row[0] if row else 0
    if version > len(steps):
        raise ConfigError(
            f"the database holds {component} schema version {version}; this Genesis knows "
            f"only {len(steps)}: upgrade Genesis"
        )
    for number, step in enumerate(steps[version:], start=version + 1):
        for statement in step:
            conn.execute(sa.text(statement) if isinstance(statement, str) else statement)
        logger.info("migrated %s to schema version %d", component, number)
    if len(steps) > version:
        if row:
            conn.execute(
                _MIGRATIONS.update()
                .where(_MIGRATIONS.c.component == component)
                .values(version=len(steps))
            )
        else:
            conn.execute(_MIGRATIONS.insert().values(component=component, version=len(steps)))
    return len(steps)


_SCHEMA_TRIES = 5


def _with_retries(work: Callable[[sa.Connection], T], engine: Engine) -> T:
    """``work`` in one transaction, begun again when a concurrent schema change made it fail;
    the last of ``_SCHEMA_TRIES`` tries raises what it meets."""
    for attempt in range(1, _SCHEMA_TRIES):
        try:
            with engine.begin() as conn:
                return work(conn)
        except (sa.exc.IntegrityError, sa.exc.OperationalError, sa.exc.ProgrammingError):
            logger.debug("schema change raced another process; try %d again", attempt + 1)
    with engine.begin() as conn:
        return work(conn)
