"""A `TokenStore` in one SQLite file: the embedded L2, so token IDs outlive the process.

Without Redis, an in-process store would start cold on every CLI run; this file keeps the
packed IDs between runs at the cost of a local read (~0.1 ms for a handful of keys). SQLite
calls are made inline: they are short, and a thread hop would cost more than the read.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from genesis.errors import CacheError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL, written REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_by_written ON tokens (written);
"""


# How long opening the file waits for another process's lock, and how long a read or write
# waits afterwards.
OPEN_TIMEOUT_S = 10.0
BUSY_TIMEOUT_MS = 50


class SqliteTokenStore:
    """`TokenStore` backed by a SQLite file, bounded by ``max_bytes`` of values.

    Expiry uses wall-clock time (``clock``, default ``time.time``) because entries persist
    across processes. Past ``max_bytes`` the oldest-written entries are evicted.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 512 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self._path = Path(path)
        self._max_bytes = max_bytes
        self._clock = clock
        # Summing every value's size is a table scan: do it once per max_bytes/16 written.
        self._unchecked = max_bytes
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # Opening waits for another process's write lock (server workers starting together
            # on a fresh home: one creates the file while the other opens it; a 50 ms wait
            # failed the other's start), as the catalog and the vector store do.
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self._path, timeout=OPEN_TIMEOUT_S
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            # Then a short busy timeout: another process holding the write lock must not stall
            # the event loop for seconds; a failed write is only a missed cache fill.
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except (OSError, sqlite3.Error) as exc:
            raise CacheError(f"cannot open token store {self._path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise CacheError(f"token store {self._path} is closed")
        return self._db

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        marks = ",".join("?" * len(keys))
        try:
            rows = (
                self._conn()
                .execute(
                    f"SELECT key, value, expires FROM tokens WHERE key IN ({marks})", list(keys)
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise CacheError(f"token store read failed: {exc}") from exc
        now = self._clock()
        found = {k: bytes(v) for k, v, exp in rows if exp is None or exp > now}
        return [found.get(k) for k in keys]

    async def mset(self, items: Mapping[str, bytes], ttl_s: float | None) -> None:
        if not items:
            return
        now = self._clock()
        expires = now + ttl_s if ttl_s is not None else None
        rows = [(k, v, expires, now) for k, v in items.items()]
        try:
            with self._conn() as db:
                db.executemany("INSERT OR REPLACE INTO tokens VALUES (?, ?, ?, ?)", rows)
                self._unchecked += sum(len(v) for v in items.values())
                if self._unchecked >= self._max_bytes // 16:
                    self._evict(db, now)
                    self._unchecked = 0
        except sqlite3.Error as exc:
            raise CacheError(f"token store write failed: {exc}") from exc

    def _evict(self, db: sqlite3.Connection, now: float) -> None:
        db.execute("DELETE FROM tokens WHERE expires IS NOT NULL AND expires <= ?", (now,))
        total = db.execute("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM tokens").fetchone()[0]
        if total <= self._max_bytes:
            return
        excess = total - self._max_bytes
        for key, size in db.execute("SELECT key, LENGTH(value) FROM tokens ORDER BY written"):
            db.execute("DELETE FROM tokens WHERE key = ?", (key,))
            excess -= size
            if excess <= 0:
                break

    async def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise ValueError("delete_prefix needs a non-empty prefix")
        # A range scan on the primary key: every key >= prefix and < prefix with its last
        # character bumped starts with prefix (LIKE would treat % and _ as wildcards).
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        try:
            with self._conn() as db:
                cur = db.execute("DELETE FROM tokens WHERE key >= ? AND key < ?", (prefix, upper))
                return int(cur.rowcount)
        except sqlite3.Error as exc:
            raise CacheError(f"token store delete failed: {exc}") from exc

    async def ttl(self, key: str) -> float | None:
        try:
            row = (
                self._conn().execute("SELECT expires FROM tokens WHERE key = ?", (key,)).fetchone()
            )
        except sqlite3.Error as exc:
            raise CacheError(f"token store read failed: {exc}") from exc
        if row is None:
            return None
        if row[0] is None:
            return math.inf
        left = float(row[0]) - self._clock()
        return left if left > 0 else None

    async def ping(self) -> None:
        try:
            self._conn().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise CacheError(f"token store check failed: {exc}") from exc

    async def check_memory_policy(self) -> dict[str, Any]:
        return {"backend": "sqlite", "ok": True, "warning": None, "max_bytes": self._max_bytes}

    async def aclose(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
