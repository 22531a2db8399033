"""Text embeddings kept on disk: a warm process reads vectors instead of re-embedding them.

The evidence check (`genesis.rag.EvidenceScorer`) embeds the sentences of every chunk it
weighs. Kept only in memory, they were embedded again by every new process: a warm
`genesis ask` spent ~0.6 s of its ~1.6 s embedding the sentences of six collections' best
chunks. :class:`TextVectorStore` keeps them in one SQLite file under ``GENESIS_HOME``, keyed by
the embedder's fingerprint and a hash of the text, so another model or a changed text is a miss,
never a stale vector. :class:`StoredEmbeddings` puts it in front of an embedder: stored
vectors are read back, misses are embedded and written back.

Why SQLite: it is already how Genesis keeps state between processes, its WAL mode lets several
processes (``genesis serve --workers N``) read while one writes, and a batch of a few dozen
keys reads in well under a millisecond. Each value carries a small header (format, dimension,
CRC-32 of the floats), so a damaged value is detected, dropped and re-embedded, never used; a
file SQLite cannot read at all is moved aside (kept, not deleted) and a new one is started.

Every method blocks on disk: call them from the CPU executor or a worker thread, never from
the event loop.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

_F32 = npt.NDArray[np.float32]
EmbedMany = Callable[[Sequence[str]], _F32]
R = TypeVar("R")
Progress = Callable[[int, int, str], None]

_FORMAT = 1
# format (uint8), reserved (uint8), dimension (uint16), CRC-32 of the float bytes (uint32)
_HEADER = struct.Struct("<BBHI")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    model TEXT NOT NULL, digest BLOB NOT NULL, value BLOB NOT NULL, written REAL NOT NULL,
    PRIMARY KEY (model, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vectors_by_written ON vectors (written);
"""
# SQLite binds at most 999 parameters in older builds; a read asks for this many at a time.
_READ_BATCH = 500


def text_digest(text: str) -> bytes:
    """The key of ``text``: 16 bytes of its SHA-256 (a collision is not a practical risk)."""
    return hashlib.sha256(text.encode("utf-8")).digest()[:16]


def pack_vector(vector: npt.ArrayLike) -> bytes:
    """``vector`` as float32 little-endian bytes behind the checked header."""
    data = np.ascontiguousarray(vector, dtype="<f4").tobytes()
    return _HEADER.pack(_FORMAT, 0, len(data) // 4, zlib.crc32(data)) + data


def unpack_vector(value: bytes, dim: int) -> _F32 | None:
    """The vector in ``value``, or ``None`` when its header, length or checksum is wrong."""
    if len(value) != _HEADER.size + 4 * dim:
        return None
    fmt, _, stored_dim, crc = _HEADER.unpack_from(value)
    data = value[_HEADER.size :]
    if fmt != _FORMAT or stored_dim != dim or zlib.crc32(data) != crc:
        return None
    out: _F32 = np.frombuffer(data, dtype="<f4").astype(np.float32)
    return out


class TextVectorStore:
    """Vectors of texts under one model ``fingerprint`` in a SQLite file at ``path``.

    - :meth:`get_many` returns the stored vector of each text, ``None`` for a miss (absent,
      damaged, or another dimension); :meth:`put_many` stores vectors (last writer wins).
    - The file opens on first use. Reads and writes of one process share one connection
      under a lock; other processes read concurrently (WAL) and wait up to ``busy_timeout_s``
      for the write lock. A failed write is logged, never raised: the store is an optimisation.
    - A file SQLite reports as damaged is renamed to ``<name>.corrupt-<ns>`` (with its WAL)
      and a new one is started, with one warning naming both; the vectors are embedded again
      on demand. Nothing else under ``GENESIS_HOME`` is touched.
    - Past ``max_bytes`` of values, the oldest-written entries are evicted.
    """

    def __init__(
        self,
        path: str | Path,
        fingerprint: str,
        dim: int,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        busy_timeout_s: float = 2.0,
    ) -> None:
        if max_bytes <= 0 or dim <= 0:
            raise ValueError(f"bad text vector store settings: max_bytes={max_bytes} dim={dim}")
        self._path = Path(path)
        self._fingerprint = fingerprint
        self._dim = dim
        self._max_bytes = max_bytes
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._inode: int | None = None
        self._warned: set[str] = set()
        # Summing every value's size is a table scan: done once per max_bytes/16 written.
        self._unchecked = max_bytes

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def path(self) -> Path:
        return self._path

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def get_many(self, texts: Sequence[str]) -> list[_F32 | None]:
        """The stored vector of each of ``texts`` (``None`` where there is none)."""
        if not texts:
            return []
        digests = [text_digest(t) for t in texts]
        found: dict[bytes, bytes] = {}
        unique = list(dict.fromkeys(digests))
        for start in range(0, len(unique), _READ_BATCH):
            found.update(self._read(unique[start : start + _READ_BATCH]))
        out: list[_F32 | None] = []
        damaged = 0
        for digest in digests:
            value = found.get(digest)
            vector = unpack_vector(value, self._dim) if value is not None else None
            damaged += value is not None and vector is None
            out.append(vector)
        if damaged:
            logger.warning(
                "text vector store %s: %d damaged value(s) dropped, embedding them again",
                self._path,
                damaged,
            )
        return out

    def put_many(self, texts: Sequence[str], vectors: _F32) -> None:
        """Store ``vectors[i]`` as the vector of ``texts[i]``; errors are logged, not raised."""
        if not texts:
            return
        now = time.time()
        rows = [
            (self._fingerprint, text_digest(t), pack_vector(v), now)
            for t, v in zip(texts, vectors, strict=True)
        ]
        self._run(self._write, rows, default=None)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- SQLite ------------------------------------------------------------------------

    def _read(self, digests: list[bytes]) -> dict[bytes, bytes]:
        def query(db: sqlite3.Connection) -> dict[bytes, bytes]:
            marks = ",".join("?" * len(digests))
            rows = db.execute(
                f"SELECT digest, value FROM vectors WHERE model = ? AND digest IN ({marks})",
                [self._fingerprint, *digests],
            ).fetchall()
            return {bytes(d): bytes(v) for d, v in rows}

        return self._run(query, default={})

    def _write(self, db: sqlite3.Connection, rows: list[tuple[str, bytes, bytes, float]]) -> None:
        with db:
            db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)
        self._unchecked += sum(len(r[2]) for r in rows)
        if self._unchecked >= self._max_bytes // 16:
            self._unchecked = 0
            with db:
                self._evict(db)

    def _evict(self, db: sqlite3.Connection) -> None:
        total = db.execute("SELECT COALESCE(SUM(LENGTH(value)), 0) FROM vectors").fetchone()[0]
        excess = int(total) - self._max_bytes
        if excess <= 0:
            return
        rows = excess // (_HEADER.size + 4 * self._dim) + 1
        db.execute(
            "DELETE FROM vectors WHERE (model, digest) IN "
            "(SELECT model, digest FROM vectors ORDER BY written LIMIT ?)",
            (rows,),
        )

    def _run(self, op: Callable[..., R], *args: object, default: R) -> R:
        """``op(connection, *args)`` under the lock; a damaged file is set aside and ``op``
        tried once more on a new one; any other SQLite error is logged and gives ``default``."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    return op(self._connect(), *args)
                except sqlite3.OperationalError as exc:  # locked, busy, I/O: not damage
                    self._warn(exc)
                    return default
                except sqlite3.DatabaseError as exc:  # "malformed", "not a database"
                    if attempt == 2 or not self._set_aside(exc):
                        self._warn(exc)
                        return default
                except OSError as exc:
                    self._warn(exc)
                    return default
        return default

    def _warn(self, exc: Exception) -> None:
        """A warning the first time an error is seen, then debug lines: a read-only home must
        not log on every request."""
        text = f"{type(exc).__name__}: {exc}"
        level = logging.DEBUG if text in self._warned else logging.WARNING
        self._warned.add(text)
        logger.log(level, "text vector store %s unusable, embedding instead: %s", self._path, text)

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # One connection for the process's threads, used under self._lock only.
        db = sqlite3.connect(self._path, timeout=self._busy_timeout_s, check_same_thread=False)
        # Which file this is: a damaged one is set aside only if no other process did so
        # (and started a new one) since.
        self._inode = self._path.stat().st_ino
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        self._db = db
        return db

    def _set_aside(self, exc: Exception) -> bool:
        """Rename the damaged file (and its WAL) out of the way, unless another process did
        so already, and forget the connection: the next call starts a new file. False when
        the file could not be moved (then it is left as it is and only read around)."""
        if self._db is not None:
            self._db.close()
            self._db = None
        try:
            if self._path.stat().st_ino != self._inode:
                return True  # another process already replaced it: just reopen
        except FileNotFoundError:
            return True
        # Nanoseconds in the name: a second damaged file never replaces the first one kept.
        aside = self._path.with_name(f"{self._path.name}.corrupt-{time.time_ns()}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self._path}{suffix}")
                if src.exists():
                    os.replace(src, f"{aside}{suffix}")
        except OSError as move_error:
            logger.warning(
                "text vector store %s is damaged (%s) and could not be moved: %s",
                self._path,
                exc,
                move_error,
            )
            return False
        logger.warning(
            "text vector store %s is damaged (%s): moved to %s, starting a new file; "
            "its vectors will be embedded again when needed",
            self._path,
            exc,
            aside,
        )
        return True


class StoredEmbeddings:
    """``embed(texts)`` with a :class:`TextVectorStore` in front: stored vectors are read back,
    the others embedded in one call and written back. ``embed`` must be the embedder whose
    fingerprint the store was opened with (the vectors read back are what it gave)."""

    def __init__(self, embed: EmbedMany, store: TextVectorStore) -> None:
        self._embed = embed
        self._store = store
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def store(self) -> TextVectorStore:
        return self._store

    def embed_documents(self, texts: Sequence[str]) -> _F32:
        """An ``(len(texts), dim)`` array, row ``i`` the vector of ``texts[i]`` (blocking)."""
        out = np.empty((len(texts), self._store.dim), dtype=np.float32)
        stored = self._store.get_many(texts)
        missing = list(dict.fromkeys(t for t, v in zip(texts, stored, strict=True) if v is None))
        fresh = dict(zip(missing, self._embed_and_store(missing), strict=True))
        for i, (text, vector) in enumerate(zip(texts, stored, strict=True)):
            out[i] = vector if vector is not None else fresh[text]
        with self._lock:
            self.hits += len(texts) - sum(v is None for v in stored)
            self.misses += len(missing)
        return out

    def warm(
        self, texts: Sequence[str], *, batch: int = 256, progress: Progress | None = None
    ) -> int:
        """Embed and store those of ``texts`` the store lacks, ``batch`` at a time (a large
        knowledge base never holds all its vectors at once), calling ``progress(done, total,
        "sentence vectors")`` after each batch; returns how many were embedded."""
        unique = list(dict.fromkeys(texts))
        stored = self._store.get_many(unique)
        missing = [t for t, v in zip(unique, stored, strict=True) if v is None]
        for start in range(0, len(missing), batch):
            self._embed_and_store(missing[start : start + batch])
            if progress is not None:
                progress(min(start + batch, len(missing)), len(missing), "sentence vectors")
        return len(missing)

    def _embed_and_store(self, texts: list[str]) -> _F32:
        if not texts:
            return np.empty((0, self._store.dim), dtype=np.float32)
        vectors = np.asarray(self._embed(texts), dtype=np.float32)
        self._store.put_many(texts, vectors)
        return vectors
