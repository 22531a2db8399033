"""The SQL database behind events, usage and rollout state: SQLite under ``GENESIS_HOME`` by
default, PostgreSQL by configuration (``store.url``), one code path (SQLAlchemy Core).

Each component owns its tables and registers versioned migrations with :func:`migrate`.
Calls are blocking: run them from the executor or a background thread, never on the loop.
"""

from genesis.store._database import Database, migrate, open_database, store_url

__all__ = ["Database", "migrate", "open_database", "store_url"]
