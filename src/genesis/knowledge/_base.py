"""`KnowledgeBase`: incremental ingestion and hybrid search over named collections.

A SQLite catalog under ``root`` records every ingested file (sha256, mtime, size) and its
chunks; vectors live in the injected `VectorStore`, BM25 indexes under ``root/bm25``.

Every blocking step (SQLite, file reads, chunking, embedding, BM25, NumPy search) runs in the
CPU executor (`genesis._executor.run_cpu`), never on the event loop. A search over a store that
can search synchronously (`SyncSearchStore`, the embedded one) is ONE executor call: dense
search, BM25, fusion and the catalog read together, since each hop costs a thread hand-off.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from genesis._executor import current_executor, run_cpu
from genesis.errors import IngestError, RetrievalError
from genesis.knowledge._bm25 import BM25Index, rrf_fuse
from genesis.knowledge._chunking import CountTokens, chunk_text, iter_source_files
from genesis.knowledge._embedder import Embedder, MiniLMEmbedder, Vector
from genesis.knowledge._store import (
    VectorHit,
    VectorStore,
    check_collection_name,
    unknown_collection,
)
from genesis.knowledge._types import Chunk, ScoredChunk

logger = logging.getLogger(__name__)

SearchMode = Literal["hybrid", "dense", "bm25"]
Progress = Callable[[int, int, str], None]
EmbedQueryAsync = Callable[[str], Awaitable[Vector]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY, settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    collection TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL,
    mtime REAL NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (collection, path)
);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY, collection TEXT NOT NULL, source TEXT NOT NULL,
    heading TEXT NOT NULL, ordinal INTEGER NOT NULL, text TEXT NOT NULL,
    hash TEXT NOT NULL, metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_source ON chunks (collection, source, ordinal);
"""
_CHUNK_COLUMNS = "id, collection, source, heading, ordinal, text, hash, metadata"
# Candidates taken from each retriever before fusion: RRF needs some depth to reorder.
_FUSION_DEPTH = 30
# Chunks of several files embedded in one call at ingest: sorted by length together they
# pad less than file by file (measured ~14% faster on the FastAPI docs).
_EMBED_GROUP = 128


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What one ``ingest`` did. A changed file counts all its old chunks as removed and all
    its new ones as added; unchanged files cost no embedding."""

    collection: str
    files_added: int
    files_changed: int
    files_removed: int
    files_unchanged: int
    chunks_added: int
    chunks_removed: int
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class _FileState:
    sha256: str
    mtime: float
    size: int


@dataclass(frozen=True, slots=True)
class _Changed:
    """A changed or new file, read and chunked, waiting for its group's embedding."""

    rel: str
    state: _FileState
    chunks: list[Chunk]
    new: bool


@dataclass(slots=True)
class _Counts:
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0


@runtime_checkable
class SyncSearchStore(Protocol):
    """A `VectorStore` that can also search synchronously (in memory, on the caller's thread).

    ``search_sync`` has ``search``'s contract; the knowledge base calls it inside the one
    executor call of a search, with BM25 and the catalog read, instead of a second hop.
    """

    def search_sync(
        self,
        collection: str,
        vector: npt.NDArray[np.float32],
        top_k: int,
        where: Mapping[str, str] | None = None,
    ) -> list[VectorHit]: ...


def embedding_text(chunk: Chunk) -> str:
    """What is embedded and BM25-indexed for ``chunk``: its breadcrumb, then its text."""
    return f"{chunk.heading}\n\n{chunk.text}" if chunk.heading else chunk.text


@runtime_checkable
class _HealthChecked(Protocol):
    async def health_check(self) -> None: ...


def _catalog_counts(path: Path) -> dict[str, int]:
    query = (
        "SELECT c.name, COUNT(k.id) FROM collections c LEFT JOIN chunks k "
        "ON k.collection = c.name GROUP BY c.name ORDER BY c.name"
    )
    try:
        if not path.is_file():
            raise RetrievalError(f"knowledge catalog {path} is missing")
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1.0)
        try:
            return {name: n for name, n in db.execute(query)}
        finally:
            db.close()
    except (OSError, sqlite3.Error) as exc:
        raise RetrievalError(f"knowledge catalog {path} unreadable: {exc}") from exc


class KnowledgeBase:
    """Collections of chunked files, searched densely, lexically (BM25) or both (RRF).

    ``count_tokens`` counts chunk sizes with a real tokenizer (normally the embedder's).
    ``embed_query_async`` embeds a query without blocking the loop (for example a batcher
    that embeds concurrent queries together); by default the embedder's ``embed_query`` runs
    in the CPU executor. Not safe for concurrent ``ingest``/``drop`` from several processes on
    one ``root``.
    """

    def __init__(
        self,
        root: Path,
        embedder: Embedder,
        store: VectorStore,
        *,
        chunk_tokens: int = 256,
        count_tokens: CountTokens,
        embed_query_async: EmbedQueryAsync | None = None,
    ) -> None:
        self._root = Path(root)
        self._embedder = embedder
        self._store = store
        self._chunk_tokens = chunk_tokens
        self._count_tokens = count_tokens
        self._embed_query_async = embed_query_async
        try:
            self._root.mkdir(parents=True, exist_ok=True)
            # Used from the executor's threads: one connection, one lock around every use.
            # WAL + a busy timeout: several server workers read while one process writes.
            self._db = sqlite3.connect(
                self._root / "catalog.sqlite", check_same_thread=False, timeout=10.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise RetrievalError(
                f"cannot open knowledge catalog under {self._root}: {exc}"
            ) from exc
        self._db_lock = threading.RLock()
        self._bm25: dict[str, BM25Index] = {}
        self._write_lock = asyncio.Lock()
        # Collections seen in the catalog: a search checks its collection here and reads
        # SQLite only on a miss (another process may have ingested it since).
        self._known: set[str] = set()

    @classmethod
    def embedded(
        cls, root: Path, embedder: MiniLMEmbedder | None = None, *, chunk_tokens: int = 256
    ) -> KnowledgeBase:
        """The offline default: MiniLM embedder, `EmbeddedVectorStore` under ``root/vectors``,
        chunks counted with the embedder's own tokenizer."""
        from genesis.knowledge._embedded import EmbeddedVectorStore
        from genesis.tokens import HFTokenizer

        embedder = embedder or MiniLMEmbedder()
        counter = HFTokenizer.from_file(embedder.tokenizer_path, name="all-minilm-l6-v2")
        store = EmbeddedVectorStore(Path(root) / "vectors")
        return cls(
            Path(root), embedder, store, chunk_tokens=chunk_tokens, count_tokens=counter.count
        )

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    # -- ingestion ------------------------------------------------------------------------------

    async def ingest(
        self, folder: Path, collection: str, *, progress: Progress | None = None
    ) -> IngestReport:
        """Bring ``collection`` in line with the supported files under ``folder``.

        Unchanged files (same size and mtime, or same sha256) do no work; a changed or new
        file replaces exactly its own chunks; a file gone from ``folder`` loses its chunks.
        Each file is committed on its own, so an interrupted ingest resumes where it stopped.
        ``progress(done, total, path)`` is called after each file.
        """
        check_collection_name(collection)
        started = time.perf_counter()
        files = await run_cpu(lambda: list(iter_source_files(Path(folder))))
        async with self._write_lock:
            counts = await self._ingest_files(Path(folder), collection, files, progress)
        return IngestReport(
            collection=collection,
            files_added=counts.added,
            files_changed=counts.changed,
            files_removed=counts.removed,
            files_unchanged=counts.unchanged,
            chunks_added=counts.chunks_added,
            chunks_removed=counts.chunks_removed,
            elapsed_s=round(time.perf_counter() - started, 3),
        )

    async def _ingest_files(
        self,
        folder: Path,
        collection: str,
        files: Sequence[tuple[str, Path]],
        progress: Progress | None,
    ) -> _Counts:
        known = await self._known_files(collection)
        counts = _Counts()
        try:
            group: list[_Changed] = []
            for done, (rel, path) in enumerate(files, start=1):
                try:
                    changed_file = await self._read_file(
                        collection, rel, path, known.get(rel), counts
                    )
                except IngestError:
                    # The files read before the bad one are committed, as file by file.
                    await self._write_group(collection, group, counts)
                    raise
                if changed_file is not None:
                    group.append(changed_file)
                if done == len(files) or sum(len(f.chunks) for f in group) >= _EMBED_GROUP:
                    await self._write_group(collection, group, counts)
                    group = []
                if progress is not None:
                    progress(done, len(files), rel)
            for rel in sorted(set(known) - {rel for rel, _ in files}):
                counts.chunks_removed += await self._remove_file(collection, rel)
                counts.removed += 1
        finally:
            # Files are committed one by one, so an interrupted ingest has changed the
            # collection too: the lexical index must follow whatever was committed.
            changed = counts.added or counts.changed or counts.removed
            if changed or not self._bm25_path(collection).is_file():
                await run_cpu(self._rebuild_bm25, collection)
        logger.info("ingested %s into %s: %s", folder, collection, counts)
        return counts

    async def _known_files(self, collection: str) -> dict[str, _FileState]:
        """Catalogued files; none when the settings or the store no longer match the catalog
        (another embedder, chunk size, or a wiped store): everything is then re-ingested."""
        settings = json.dumps(
            {"embedder": self._embedder.fingerprint, "chunk_tokens": self._chunk_tokens}
        )
        previous, chunk_count = await run_cpu(self._record_settings, collection, settings)
        stored = await self._store.count(collection)
        if previous is None or previous != settings or stored != chunk_count:
            if previous is not None:
                logger.warning(
                    "re-ingesting all of %s: embedder, chunk size or store changed", collection
                )
            await self._clear(collection)
            return {}
        return await run_cpu(self._file_states, collection)

    def _record_settings(self, collection: str, settings: str) -> tuple[str | None, int]:
        """Store ``settings`` for ``collection``; return the previous ones and its chunk count."""
        with self._db_lock:
            row = self._db.execute(
                "SELECT settings FROM collections WHERE name = ?", (collection,)
            ).fetchone()
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO collections (name, settings) VALUES (?, ?)",
                    (collection, settings),
                )
            self._known.add(collection)
            return (None if row is None else str(row[0])), self._chunk_count(collection)

    def _file_states(self, collection: str) -> dict[str, _FileState]:
        with self._db_lock:
            rows = self._db.execute(
                "SELECT path, sha256, mtime, size FROM files WHERE collection = ?", (collection,)
            ).fetchall()
        return {r[0]: _FileState(r[1], r[2], r[3]) for r in rows}

    async def _read_file(
        self, collection: str, rel: str, path: Path, prev: _FileState | None, counts: _Counts
    ) -> _Changed | None:
        """The file's new chunks when it changed (or is new); None when it did not."""
        state, data = await run_cpu(_read_if_changed, path, prev)
        if data is None:
            counts.unchanged += 1
            return None
        if prev is not None and prev.sha256 == state.sha256:
            await run_cpu(self._save_file, collection, rel, state, None)
            counts.unchanged += 1
            return None
        chunks = await run_cpu(self._chunk, collection, rel, path, data)
        return _Changed(rel, state, chunks, prev is None)

    async def _embed_parallel(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """``embed_documents(texts)`` spread over the executor's workers: one forward pass per
        worker at a time (each single-threaded) scales better on small matrices than one pass
        with intra-op threads. Texts are dealt out in length order, so every share pads alike."""
        parts = min(current_executor().workers, max(1, len(texts) // 8))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        shares = [order[k::parts] for k in range(parts)]
        results = await asyncio.gather(
            *(
                run_cpu(self._embedder.embed_documents, [texts[i] for i in share])
                for share in shares
            )
        )
        out = np.empty((len(texts), self._embedder.dim), dtype=np.float32)
        for share, rows in zip(shares, results, strict=True):
            out[share] = rows
        return out

    async def _write_group(self, collection: str, group: list[_Changed], counts: _Counts) -> None:
        """Embed the chunks of several changed files in ONE call (sorted by length inside, so
        less padding than file by file), then write and commit each file on its own."""
        texts = [embedding_text(c) for f in group for c in f.chunks]
        vectors = await self._embed_parallel(texts) if texts else None
        start = 0
        for f in group:
            rows = vectors[start : start + len(f.chunks)] if vectors is not None else None
            start += len(f.chunks)
            counts.chunks_removed += await self._replace_chunks(collection, f.rel, f.chunks, rows)
            await run_cpu(self._save_file, collection, f.rel, f.state, f.chunks)
            counts.chunks_added += len(f.chunks)
            if f.new:
                counts.added += 1
            else:
                counts.changed += 1

    def _chunk(self, collection: str, rel: str, path: Path, data: bytes) -> list[Chunk]:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IngestError(f"cannot ingest {path}: not UTF-8 text ({exc})") from exc
        return chunk_text(
            text,
            source=rel,
            collection=collection,
            max_tokens=self._chunk_tokens,
            count_tokens=self._count_tokens,
        )

    async def _replace_chunks(
        self,
        collection: str,
        rel: str,
        chunks: Sequence[Chunk],
        vectors: npt.NDArray[np.float32] | None = None,
    ) -> int:
        """Write ``chunks`` of ``rel`` (with their ``vectors`` when already embedded) to the
        store; delete its old chunks that are gone."""
        old = await run_cpu(self._chunk_ids_of, collection, rel)
        new_ids = {c.id for c in chunks}
        stale = [i for i in old if i not in new_ids]
        if stale:
            await self._store.delete(collection, stale)
        if chunks:
            if vectors is None:
                texts = [embedding_text(c) for c in chunks]
                vectors = await run_cpu(self._embedder.embed_documents, texts)
            payloads = [{"source": c.source} for c in chunks]
            await self._store.upsert(collection, [c.id for c in chunks], vectors, payloads)
        return len(old)

    def _chunk_ids_of(self, collection: str, rel: str) -> list[str]:
        with self._db_lock:
            rows = self._db.execute(
                "SELECT id FROM chunks WHERE collection = ? AND source = ?", (collection, rel)
            ).fetchall()
        return [r[0] for r in rows]

    def _save_file(
        self, collection: str, rel: str, state: _FileState, chunks: Sequence[Chunk] | None
    ) -> None:
        """Commit the file row and, unless ``chunks`` is None, its chunk rows (one transaction)."""
        with self._db_lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO files (collection, path, sha256, mtime, size) "
                "VALUES (?, ?, ?, ?, ?)",
                (collection, rel, state.sha256, state.mtime, state.size),
            )
            if chunks is None:
                return
            self._db.execute(
                "DELETE FROM chunks WHERE collection = ? AND source = ?", (collection, rel)
            )
            self._db.executemany(
                f"INSERT INTO chunks ({_CHUNK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [_chunk_row(c) for c in chunks],
            )

    async def _remove_file(self, collection: str, rel: str) -> int:
        removed = await self._replace_chunks(collection, rel, [])
        await run_cpu(self._forget_file, collection, rel)
        return removed

    def _forget_file(self, collection: str, rel: str) -> None:
        with self._db_lock, self._db:
            self._db.execute(
                "DELETE FROM chunks WHERE collection = ? AND source = ?", (collection, rel)
            )
            self._db.execute(
                "DELETE FROM files WHERE collection = ? AND path = ?", (collection, rel)
            )

    def _bm25_path(self, collection: str) -> Path:
        return self._root / "bm25" / f"{collection}.npz"

    def _rebuild_bm25(self, collection: str) -> BM25Index:
        chunks = self._chunks_of(collection)
        index = BM25Index.build([c.id for c in chunks], [embedding_text(c) for c in chunks])
        index.save(self._bm25_path(collection))
        self._bm25[collection] = index
        return index

    def _bm25_index(self, collection: str) -> BM25Index:
        if collection not in self._bm25:
            path = self._bm25_path(collection)
            try:
                self._bm25[collection] = BM25Index.load(path)
            except RetrievalError as exc:
                logger.warning("rebuilding BM25 index of %s: %s", collection, exc)
                return self._rebuild_bm25(collection)
        return self._bm25[collection]

    # -- search ---------------------------------------------------------------------------------

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        """The query's embedding (cached by the embedder), computed on the calling thread."""
        return self._embedder.embed_query(text)

    async def embed_query_async(self, text: str) -> npt.NDArray[np.float32]:
        """The query's embedding without blocking the loop: the injected ``embed_query_async``
        or, by default, the embedder's ``embed_query`` in the CPU executor."""
        if self._embed_query_async is not None:
            return await self._embed_query_async(text)
        return await run_cpu(self._embedder.embed_query, text)

    async def search(
        self, query: str, collection: str, top_k: int = 5, *, mode: SearchMode = "hybrid"
    ) -> list[ScoredChunk]:
        """The ``top_k`` best chunks for ``query``; ``hybrid`` fuses dense and BM25 with RRF."""
        _check_search(top_k, mode)
        await self._require_collection(collection)  # before the embedding, which costs more
        vector = await self.embed_query_async(query) if mode != "bm25" else None
        return await self.search_vector(vector, query, collection, top_k, mode)

    async def search_vector(
        self,
        vector: npt.NDArray[np.float32] | None,
        query: str,
        collection: str,
        top_k: int = 5,
        mode: SearchMode = "hybrid",
    ) -> list[ScoredChunk]:
        """`search` with the query embedding already computed (``None`` only for ``bm25``)."""
        _check_search(top_k, mode)
        await self._require_collection(collection)
        if vector is None and mode != "bm25":
            vector = await self.embed_query_async(query)
        depth = max(top_k, _FUSION_DEPTH) if mode == "hybrid" else top_k
        if vector is not None and mode != "bm25" and isinstance(self._store, SyncSearchStore):
            return await run_cpu(self._search_sync, vector, query, collection, top_k, mode)
        dense: list[VectorHit] = []
        if mode != "bm25":
            assert vector is not None
            dense = await self._store.search(collection, vector, depth)
        return await run_cpu(self._rank, dense, query, collection, top_k, mode)

    def best_dense_score(self, vector: npt.NDArray[np.float32], collection: str) -> float | None:
        """The best cosine of ``vector`` to a chunk of ``collection`` (blocking, sub-ms on the
        embedded store); None when the store cannot search in-process or the collection is
        unknown. The router's retrieval evidence for a close call."""
        if not isinstance(self._store, SyncSearchStore):
            return None
        if collection not in self._known:
            if collection not in self._collection_names():
                return None
            self._known.add(collection)
        hits = self._store.search_sync(collection, vector, 1)
        return float(hits[0].score) if hits else None

    def _search_sync(
        self,
        vector: npt.NDArray[np.float32],
        query: str,
        collection: str,
        top_k: int,
        mode: SearchMode,
    ) -> list[ScoredChunk]:
        """Dense search on a `SyncSearchStore`, then `_rank`: the whole search in one hop."""
        assert isinstance(self._store, SyncSearchStore)
        depth = max(top_k, _FUSION_DEPTH) if mode == "hybrid" else top_k
        dense = self._store.search_sync(collection, vector, depth)
        return self._rank(dense, query, collection, top_k, mode)

    def _rank(
        self,
        dense_hits: Sequence[VectorHit],
        query: str,
        collection: str,
        top_k: int,
        mode: SearchMode,
    ) -> list[ScoredChunk]:
        """BM25 (unless ``dense``), RRF fusion (``hybrid``) and the chunks from the catalog."""
        depth = max(top_k, _FUSION_DEPTH) if mode == "hybrid" else top_k
        dense = {h.id: h.score for h in dense_hits}
        lexical: dict[str, float] = {}
        if mode != "dense":
            lexical = dict(self._bm25_index(collection).search(query, depth))
        if mode == "hybrid":
            ranked = rrf_fuse([list(dense), list(lexical)])[:top_k]
        else:
            ranked = list((dense or lexical).items())[:top_k]
        return self._scored(ranked, dense, lexical)

    async def _require_collection(self, collection: str) -> None:
        """Raise `UnknownCollectionError` unless the catalog knows ``collection``."""
        if collection in self._known:
            return
        known = await run_cpu(self._collection_names)
        if collection not in known:
            raise unknown_collection(collection, known)

    def _scored(
        self,
        ranked: Sequence[tuple[str, float]],
        dense: Mapping[str, float],
        lexical: Mapping[str, float],
    ) -> list[ScoredChunk]:
        chunks = {c.id: c for c in self._get_chunks([i for i, _ in ranked])}
        out: list[ScoredChunk] = []
        for id_, score in ranked:
            if id_ not in chunks:  # the store holds a point the catalog lost: skip it
                continue
            scores = {name: s[id_] for name, s in (("dense", dense), ("bm25", lexical)) if id_ in s}
            out.append(ScoredChunk(chunks[id_], score, len(out) + 1, scores))
        return out

    # -- catalog --------------------------------------------------------------------------------

    async def collections(self) -> dict[str, int]:
        """Every collection with its number of chunks."""
        return await run_cpu(self._collection_counts)

    async def health_check(self) -> dict[str, int]:
        """Readiness of the knowledge store; the chunk count per collection.

        The catalog file is opened afresh, read-only: the open connection would keep reading
        a file deleted under it, and the process could neither restart nor ingest. A vector
        store with a ``health_check`` runs it, any other lists its collections (a round trip
        to a Qdrant server). Raises :class:`RetrievalError` when either is gone.
        """
        # A thread of its own, not the CPU executor: a saturated executor must not make the
        # store look down (and pull a busy replica out of its load balancer).
        counts = await asyncio.to_thread(_catalog_counts, self._root / "catalog.sqlite")
        if isinstance(self._store, _HealthChecked):
            await self._store.health_check()
        else:
            await self._store.collections()
        return counts

    def _collection_counts(self) -> dict[str, int]:
        with self._db_lock:
            return {name: self._chunk_count(name) for name in sorted(self._collection_names())}

    async def get_chunks(self, ids: Sequence[str]) -> list[Chunk]:
        """The chunks with these ids, in the order asked; unknown ids are left out."""
        return await run_cpu(self._get_chunks, list(ids)) if ids else []

    def _get_chunks(self, ids: Sequence[str]) -> list[Chunk]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._db_lock:
            rows = self._db.execute(
                f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE id IN ({marks})", list(ids)
            ).fetchall()
        by_id = {r[0]: _chunk_from_row(r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    async def all_chunks(self, collection: str) -> list[Chunk]:
        """Every chunk of ``collection`` in (source, ordinal) order; unknown -> error."""
        await self._require_collection(collection)
        return await run_cpu(self._chunks_of, collection)

    def _chunks_of(self, collection: str) -> list[Chunk]:
        with self._db_lock:
            rows = self._db.execute(
                f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE collection = ? "
                "ORDER BY source, ordinal",
                (collection,),
            ).fetchall()
        return [_chunk_from_row(r) for r in rows]

    async def drop(self, collection: str) -> None:
        """Remove a collection: its vectors, BM25 index and catalog rows."""
        known = await run_cpu(self._collection_names)
        if collection not in known:
            raise unknown_collection(collection, known)
        async with self._write_lock:
            await self._clear(collection)
            await run_cpu(self._forget_collection, collection)

    def _forget_collection(self, collection: str) -> None:
        with self._db_lock, self._db:
            self._db.execute("DELETE FROM collections WHERE name = ?", (collection,))
        self._known.discard(collection)

    async def _clear(self, collection: str) -> None:
        """Remove every vector, chunk, file row and the BM25 index of ``collection``."""
        await self._store.drop(collection)
        await run_cpu(self._clear_catalog, collection)

    def _clear_catalog(self, collection: str) -> None:
        with self._db_lock, self._db:
            self._db.execute("DELETE FROM chunks WHERE collection = ?", (collection,))
            self._db.execute("DELETE FROM files WHERE collection = ?", (collection,))
        self._bm25.pop(collection, None)
        self._bm25_path(collection).unlink(missing_ok=True)

    async def aclose(self) -> None:
        """Close the catalog and the vector store."""
        with self._db_lock:
            self._db.close()
        await self._store.aclose()

    async def __aenter__(self) -> KnowledgeBase:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _collection_names(self) -> list[str]:
        with self._db_lock:
            names = [r[0] for r in self._db.execute("SELECT name FROM collections")]
        self._known = set(names)
        return names

    def _chunk_count(self, collection: str) -> int:
        with self._db_lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM chunks WHERE collection = ?", (collection,)
            ).fetchone()
        return int(row[0])


def _check_search(top_k: int, mode: str) -> None:
    if mode not in ("hybrid", "dense", "bm25"):
        raise RetrievalError(f"unknown search mode {mode!r}: use hybrid, dense or bm25")
    if top_k < 1:
        raise RetrievalError(f"top_k must be >= 1, got {top_k}")


def _read_if_changed(path: Path, prev: _FileState | None) -> tuple[_FileState, bytes | None]:
    """The file's state and content; no content when size and mtime match ``prev``."""
    try:
        stat = path.stat()
        if prev is not None and (prev.mtime, prev.size) == (stat.st_mtime, stat.st_size):
            return prev, None
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc}") from exc
    return _FileState(hashlib.sha256(data).hexdigest(), stat.st_mtime, stat.st_size), data


def _chunk_row(c: Chunk) -> tuple[Any, ...]:
    return (
        c.id,
        c.collection,
        c.source,
        c.heading,
        c.ordinal,
        c.text,
        c.hash,
        json.dumps(c.metadata),
    )


def _chunk_from_row(r: Sequence[Any]) -> Chunk:
    return Chunk(
        id=r[0],
        collection=r[1],
        source=r[2],
        heading=r[3],
        ordinal=r[4],
        text=r[5],
        hash=r[6],
        metadata=json.loads(r[7]),
    )
