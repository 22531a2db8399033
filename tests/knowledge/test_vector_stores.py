"""Both vector stores pass the same contract; store-specific behaviour below."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient

from genesis.errors import VectorStoreError
from genesis.knowledge import EmbeddedVectorStore, QdrantVectorStore, VectorStore
from genesis.testing.vector_store_contract import VectorStoreContract, unit_vectors


class TestEmbeddedStoreExact(VectorStoreContract):
    """Small collections: exact NumPy search."""

    persistent = True

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[EmbeddedVectorStore]:
        store = EmbeddedVectorStore(tmp_path / "vectors")
        yield store
        await store.aclose()

    async def reopen(self, store: VectorStore) -> VectorStore:
        assert isinstance(store, EmbeddedVectorStore)
        await store.aclose()
        return EmbeddedVectorStore(store.path)


class TestEmbeddedStoreHNSW(TestEmbeddedStoreExact):
    """Every collection on the usearch index (its save/load/remove paths included)."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[EmbeddedVectorStore]:
        store = EmbeddedVectorStore(tmp_path / "vectors", exact_below=1)
        yield store
        await store.aclose()

    async def reopen(self, store: VectorStore) -> VectorStore:
        assert isinstance(store, EmbeddedVectorStore)
        await store.aclose()
        return EmbeddedVectorStore(store.path, exact_below=1)


class TestQdrantLocalStore(VectorStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[QdrantVectorStore]:
        store = QdrantVectorStore(AsyncQdrantClient(location=":memory:"))
        yield store
        await store.aclose()


def _index_files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.glob("docs.*.usearch")}


def _restore_index_files(folder: Path, files: dict[Path, bytes]) -> None:
    for current in folder.glob("docs.*.usearch"):
        current.unlink()
    for path, data in files.items():
        path.write_bytes(data)


async def test_embedded_index_file_of_a_lost_save_is_rebuilt(tmp_path: Path) -> None:
    """A crash between the SQLite commit and the index save leaves a stale file: ignored."""
    store = EmbeddedVectorStore(tmp_path, exact_below=1)
    vectors = unit_vectors(30)
    await store.upsert("docs", [f"d{i}" for i in range(30)], vectors, [{}] * 30)
    stale = _index_files(tmp_path)
    await store.upsert("docs", ["d0"], vectors[[29]], [{"v": 2}])
    await store.aclose()
    _restore_index_files(tmp_path, stale)  # as if the newest save never happened

    reopened = EmbeddedVectorStore(tmp_path, exact_below=1)
    hits = await reopened.search("docs", vectors[29], top_k=2)
    assert {h.id for h in hits} == {"d0", "d29"}
    await reopened.aclose()


async def test_embedded_hnsw_agrees_with_exact_search(tmp_path: Path) -> None:
    vectors = unit_vectors(3000, dim=64)
    ids = [f"d{i}" for i in range(3000)]
    approx = EmbeddedVectorStore(tmp_path / "a", exact_below=1)
    exact = EmbeddedVectorStore(tmp_path / "b", exact_below=10**9)
    for store in (approx, exact):
        await store.upsert("docs", ids, vectors, [{}] * 3000)
    queries = unit_vectors(20, dim=64, seed=9)
    agree = 0
    for q in queries:
        a = [h.id for h in await approx.search("docs", q, 5)]
        b = [h.id for h in await exact.search("docs", q, 5)]
        agree += len(set(a) & set(b))
    assert agree >= 0.9 * 5 * len(queries)
    await approx.aclose()
    await exact.aclose()


async def test_embedded_refuses_zero_and_nan_vectors(tmp_path: Path) -> None:
    store = EmbeddedVectorStore(tmp_path)
    with pytest.raises(VectorStoreError, match="zero vector"):
        await store.upsert("docs", ["a"], np.zeros((1, 4), np.float32), [{}])
    with pytest.raises(VectorStoreError, match="NaN"):
        await store.upsert("docs", ["a"], np.full((1, 4), np.nan, np.float32), [{}])
    await store.aclose()


async def test_embedded_refuses_unserialisable_payload(tmp_path: Path) -> None:
    store = EmbeddedVectorStore(tmp_path)
    with pytest.raises(VectorStoreError, match="JSON"):
        await store.upsert("docs", ["a"], unit_vectors(1), [{"x": object()}])
    assert await store.collections() == []
    await store.aclose()


async def test_qdrant_keeps_string_ids_through_uuid_mapping() -> None:
    store = QdrantVectorStore(AsyncQdrantClient(location=":memory:"))
    await store.upsert("docs", ["a/b.md#3"], unit_vectors(1), [{"k": "v"}])
    hits = await store.search("docs", unit_vectors(1)[0], top_k=1)
    assert (hits[0].id, hits[0].payload) == ("a/b.md#3", {"k": "v"})
    await store.aclose()


async def test_qdrant_errors_become_vector_store_errors() -> None:
    client = AsyncQdrantClient(location=":memory:")
    store = QdrantVectorStore(client)
    await store.upsert("docs", ["a"], unit_vectors(1), [{}])
    await store.search("docs", unit_vectors(1)[0], top_k=1)
    await client.delete_collection("docs")  # dropped behind the store's back
    with pytest.raises(VectorStoreError, match="qdrant search"):
        await store.search("docs", unit_vectors(1)[0], top_k=1)
    await store.aclose()
