"""Incremental ingestion and hybrid search through the `KnowledgeBase` facade."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from genesis.errors import IngestError, RetrievalError, UnknownCollectionError
from genesis.knowledge import (
    EmbeddedVectorStore,
    KnowledgeBase,
    MiniLMEmbedder,
    ScoredChunk,
    bm25_terms,
    default_model_dir,
)
from genesis.tokens import HFTokenizer


class HashingEmbedder:
    """A fast, deterministic bag-of-words embedder that records every text it embeds."""

    dim = 384
    fingerprint = "hashing-test"

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def warm_up(self) -> None:
        pass

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.embedded.extend(texts)
        return self._vectors(texts)

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        return self._vectors([text])[0]

    def _vectors(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            out[row, 0] = 1e-3  # never a zero vector
            for term in bm25_terms(text):
                out[row, zlib.crc32(term.encode()) % self.dim] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def count() -> HFTokenizer:
    return HFTokenizer.from_file(default_model_dir() / "tokenizer.json")


FILES = {
    "guide/install.md": "# Install\n\nRun pip install genesis to install the package.\n\n"
    "## Windows\n\nOn Windows use PowerShell and the py launcher.\n",
    "guide/cache.md": "# Cache\n\nThe token cache keeps token ids in Redis with an LRU policy.\n",
    "api.py": "def connect(url):\n    '''Open a Redis connection pool.'''\n    return url\n\n\n"
    "class Router:\n    '''Routes a task to an agent by rules then embeddings.'''\n",
    "notes.txt": "Breakers open when Redis is slow.\n\nThey probe and close again.\n",
}


def _write(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text, encoding="utf-8")


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    _write(folder, FILES)
    return folder


@pytest.fixture
async def kb(tmp_path: Path, count: HFTokenizer) -> AsyncIterator[KnowledgeBase]:
    store = EmbeddedVectorStore(tmp_path / "kb" / "vectors")
    base = KnowledgeBase(
        tmp_path / "kb", HashingEmbedder(), store, chunk_tokens=64, count_tokens=count.count
    )
    yield base
    await base.aclose()


def _embedded(kb: KnowledgeBase) -> list[str]:
    embedder = kb.embedder
    assert isinstance(embedder, HashingEmbedder)
    return embedder.embedded


async def _by_source(kb: KnowledgeBase, collection: str) -> dict[str, list[tuple[str, str]]]:
    chunks = await kb.search("install redis cache router breakers windows", collection, 50)
    out: dict[str, list[tuple[str, str]]] = {}
    for scored in sorted(chunks, key=lambda s: (s.chunk.source, s.chunk.ordinal)):
        out.setdefault(scored.chunk.source, []).append((scored.chunk.id, scored.chunk.hash))
    return out


async def test_first_ingest_reports_and_calls_progress_per_file(
    kb: KnowledgeBase, docs: Path
) -> None:
    calls: list[tuple[int, int, str]] = []
    report = await kb.ingest(docs, "docs", progress=lambda *a: calls.append(a))
    assert (report.files_added, report.files_unchanged, report.files_removed) == (4, 0, 0)
    assert report.chunks_added == len(_embedded(kb)) >= 5
    assert calls == [(i + 1, 4, rel) for i, rel in enumerate(sorted(FILES))]
    assert await kb.collections() == {"docs": report.chunks_added}


async def test_unchanged_folder_does_no_work(kb: KnowledgeBase, docs: Path) -> None:
    await kb.ingest(docs, "docs")
    before = len(_embedded(kb))
    os.utime(docs / "notes.txt")  # touched, same content: hashed, not re-embedded
    report = await kb.ingest(docs, "docs")
    assert len(_embedded(kb)) == before
    assert (report.files_unchanged, report.chunks_added, report.chunks_removed) == (4, 0, 0)


async def test_changed_file_replaces_exactly_its_own_chunks(kb: KnowledgeBase, docs: Path) -> None:
    await kb.ingest(docs, "docs")
    before = await _by_source(kb, "docs")
    embedded = len(_embedded(kb))
    _write(docs, {"guide/cache.md": "# Cache\n\nThe cache now uses Redis MGET for batches.\n"})
    report = await kb.ingest(docs, "docs")
    after = await _by_source(kb, "docs")
    assert (report.files_changed, report.files_unchanged) == (1, 3)
    assert _embedded(kb)[embedded:] == [
        "Cache\n\n# Cache\n\nThe cache now uses Redis MGET for batches."
    ]
    assert {k: v for k, v in after.items() if k != "guide/cache.md"} == {
        k: v for k, v in before.items() if k != "guide/cache.md"
    }
    assert after["guide/cache.md"] != before["guide/cache.md"]
    hits = await kb.search("MGET batches", "docs", 1, mode="bm25")
    assert hits[0].chunk.source == "guide/cache.md"
    assert "LRU" not in " ".join(h.chunk.text for h in await kb.search("LRU policy", "docs", 9))


async def test_deleted_file_loses_its_chunks(kb: KnowledgeBase, docs: Path) -> None:
    first = await kb.ingest(docs, "docs")
    (docs / "api.py").unlink()
    report = await kb.ingest(docs, "docs")
    assert report.files_removed == 1 and report.chunks_removed >= 1
    assert await kb.collections() == {"docs": first.chunks_added - report.chunks_removed}
    for mode in ("dense", "bm25", "hybrid"):
        hits = await kb.search("Router connection pool", "docs", 10, mode=mode)
        assert all(h.chunk.source != "api.py" for h in hits)


async def test_search_modes_rank_the_right_chunk(kb: KnowledgeBase, docs: Path) -> None:
    await kb.ingest(docs, "docs")
    for mode in ("dense", "bm25", "hybrid"):
        hits = await kb.search("PowerShell on Windows", "docs", 3, mode=mode)
        assert hits[0].chunk.heading == "Install > Windows", mode
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert all(isinstance(h, ScoredChunk) for h in hits)
    hybrid = await kb.search("PowerShell on Windows", "docs", 3)
    assert set(hybrid[0].scores) == {"dense", "bm25"}


async def test_search_vector_takes_a_precomputed_embedding(kb: KnowledgeBase, docs: Path) -> None:
    await kb.ingest(docs, "docs")
    vector = kb.embed_query("token cache")
    hits = await kb.search_vector(vector, "token cache", "docs", 2, "hybrid")
    assert hits == await kb.search("token cache", "docs", 2)
    assert await kb.search_vector(None, "token cache", "docs", 2, "bm25")


async def test_get_chunks_keeps_the_order_asked(kb: KnowledgeBase, docs: Path) -> None:
    await kb.ingest(docs, "docs")
    hits = await kb.search("redis", "docs", 3)
    ids = [h.chunk.id for h in reversed(hits)]
    assert [c.id for c in await kb.get_chunks([*ids, "missing"])] == ids


async def test_everything_survives_a_reopen(
    kb: KnowledgeBase, docs: Path, tmp_path: Path, count: HFTokenizer
) -> None:
    await kb.ingest(docs, "docs")
    expected = await kb.search("redis breakers", "docs", 3)
    await kb.aclose()
    embedder = HashingEmbedder()
    store = EmbeddedVectorStore(tmp_path / "kb" / "vectors")
    async with KnowledgeBase(
        tmp_path / "kb", embedder, store, chunk_tokens=64, count_tokens=count.count
    ) as again:
        assert (await again.ingest(docs, "docs")).files_unchanged == 4
        assert embedder.embedded == []
        assert await again.search("redis breakers", "docs", 3) == expected


async def test_changed_settings_reingest_everything(
    kb: KnowledgeBase, docs: Path, tmp_path: Path, count: HFTokenizer
) -> None:
    await kb.ingest(docs, "docs")
    await kb.aclose()
    store = EmbeddedVectorStore(tmp_path / "kb" / "vectors")
    async with KnowledgeBase(
        tmp_path / "kb", HashingEmbedder(), store, chunk_tokens=32, count_tokens=count.count
    ) as again:
        report = await again.ingest(docs, "docs")
        assert report.files_added == 4
        assert await again.collections() == {"docs": await store.count("docs")}


async def test_collections_are_separate_and_droppable(kb: KnowledgeBase, docs: Path) -> None:
    await kb.ingest(docs, "one")
    await kb.ingest(docs / "guide", "two")
    assert set(await kb.collections()) == {"one", "two"}
    assert {h.chunk.collection for h in await kb.search("install", "two", 5)} == {"two"}
    await kb.drop("one")
    assert set(await kb.collections()) == {"two"}
    with pytest.raises(UnknownCollectionError, match="'one'.*two"):
        await kb.search("install", "one")
    with pytest.raises(UnknownCollectionError):
        await kb.drop("one")


async def test_bad_input_is_named(kb: KnowledgeBase, docs: Path) -> None:
    with pytest.raises(RetrievalError, match="invalid collection name 'Bad Name'"):
        await kb.ingest(docs, "Bad Name")
    with pytest.raises(IngestError, match="missing"):
        await kb.ingest(docs / "missing", "docs")
    await kb.ingest(docs, "docs")
    with pytest.raises(RetrievalError, match="top_k"):
        await kb.search("x", "docs", 0)


# -- real data: the FastAPI docs with the real MiniLM embedder --------------------------------


def _ingest_fastapi(corpus: Path, root: Path) -> float:
    async def run() -> float:
        async with KnowledgeBase.embedded(root) as kb:
            report = await kb.ingest(corpus, "fastapi")
            return report.elapsed_s

    return asyncio.run(run())


@pytest.fixture(scope="module")
def fastapi_kb(corpora_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The whole FastAPI corpus ingested once (minutes on 2 shared cores: slow tests only)."""
    root = tmp_path_factory.mktemp("fastapi-kb")
    elapsed = _ingest_fastapi(corpora_dir / "docs" / "fastapi", root)
    print(f"ingested FastAPI docs in {elapsed:.1f} s")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _recall(hits: list[ScoredChunk], relevant: list[str]) -> float:
    found = {h.chunk.source for h in hits}
    return len(found & set(relevant)) / len(relevant)


@pytest.mark.slow
async def test_fastapi_recall_at_5(fastapi_kb: Path, corpora_dir: Path) -> None:
    lines = (corpora_dir / "docs" / "fastapi" / "queries.jsonl").read_text().splitlines()
    queries = [json.loads(line) for line in lines if line.strip()]
    recall: dict[str, float] = {}
    async with KnowledgeBase.embedded(fastapi_kb, MiniLMEmbedder()) as kb:
        for mode in ("dense", "bm25", "hybrid"):
            scores = [
                _recall(await kb.search(q["query"], "fastapi", 5, mode=mode), q["relevant"])
                for q in queries
            ]
            recall[mode] = sum(scores) / len(scores)
    print(f"FastAPI recall@5 over {len(queries)} queries: {recall}")
    assert recall["hybrid"] >= 0.85
    assert recall["dense"] >= 0.8
    assert recall["bm25"] >= 0.8


@pytest.mark.slow
async def test_fastapi_reingest_is_free(fastapi_kb: Path, corpora_dir: Path) -> None:
    embedder = MiniLMEmbedder()
    async with KnowledgeBase.embedded(fastapi_kb, embedder) as kb:
        report = await kb.ingest(corpora_dir / "docs" / "fastapi", "fastapi")
    assert report.files_unchanged == report.files_unchanged + report.files_added > 100
    assert report.chunks_added == 0


async def test_an_interrupted_ingest_keeps_lexical_search_in_step(
    kb: KnowledgeBase, docs: Path
) -> None:
    await kb.ingest(docs, "docs")
    (docs / "zebra.md").write_text("# Zebrafish\n\nZebrafish regrow their fins.\n")
    (docs / "zz-broken.md").write_bytes(b"\xff\xfe not utf-8 \xff")
    with pytest.raises(IngestError):
        await kb.ingest(docs, "docs")
    # zebra.md was committed before the failure: BM25 must already know it.
    hits = await kb.search("zebrafish", "docs", 3, mode="bm25")
    assert hits and hits[0].chunk.source == "zebra.md"
