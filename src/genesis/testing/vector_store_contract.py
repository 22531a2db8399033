"""The `VectorStore` contract as a reusable pytest suite.

A backend's tests subclass `VectorStoreContract` and provide a ``store`` fixture; a
persistent backend also overrides `reopen` and sets ``persistent = True``::

    class TestMyStore(VectorStoreContract):
        @pytest.fixture
        async def store(self, tmp_path):
            store = MyStore(tmp_path)
            yield store
            await store.aclose()
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from genesis.errors import GenesisError, UnknownCollectionError, VectorStoreError
from genesis.knowledge._store import VectorStore

DIM = 16


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> npt.NDArray[np.float32]:
    """``n`` random unit vectors (reproducible)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    out: npt.NDArray[np.float32] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return out


def _ids(n: int, prefix: str = "doc") -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


class VectorStoreContract:
    """Behaviour every `VectorStore` must show. Subclasses supply the ``store`` fixture."""

    persistent = False

    async def reopen(self, store: VectorStore) -> VectorStore:
        """Close ``store`` and open the same storage again (persistent backends only)."""
        raise NotImplementedError

    async def _fill(self, store: VectorStore, n: int = 20, collection: str = "docs") -> Any:
        vectors = unit_vectors(n)
        payloads = [{"source": f"file{i % 3}.md", "n": i} for i in range(n)]
        await store.upsert(collection, _ids(n), vectors, payloads)
        return vectors

    async def test_is_a_vector_store(self, store: VectorStore) -> None:
        assert isinstance(store, VectorStore)

    async def test_upsert_then_search_finds_the_exact_vector_first(
        self, store: VectorStore
    ) -> None:
        vectors = await self._fill(store)
        hits = await store.search("docs", vectors[7], top_k=3)
        assert hits[0].id == "doc-7"
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].payload == {"source": "file1.md", "n": 7}

    async def test_search_orders_by_cosine_similarity(self, store: VectorStore) -> None:
        vectors = await self._fill(store)
        query = unit_vectors(1, seed=42)[0]
        hits = await store.search("docs", query, top_k=5)
        expected = np.argsort(-(vectors @ query))[:5]
        assert [h.id for h in hits] == [f"doc-{i}" for i in expected]
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] == pytest.approx(float(vectors[expected[0]] @ query), abs=1e-4)

    async def test_top_k_larger_than_the_collection_returns_everything(
        self, store: VectorStore
    ) -> None:
        await self._fill(store, n=4)
        hits = await store.search("docs", unit_vectors(1, seed=1)[0], top_k=10)
        assert sorted(h.id for h in hits) == _ids(4)

    async def test_upsert_overwrites_vector_and_payload(self, store: VectorStore) -> None:
        vectors = await self._fill(store)
        await store.upsert("docs", ["doc-3"], vectors[[11]], [{"source": "new.md"}])
        assert await store.count("docs") == 20
        hits = await store.search("docs", vectors[11], top_k=2)
        assert {h.id for h in hits} == {"doc-3", "doc-11"}
        new = next(h for h in hits if h.id == "doc-3")
        assert new.payload == {"source": "new.md"}
        old = await store.search("docs", vectors[3], top_k=1)
        assert old[0].id != "doc-3"

    async def test_delete_removes_points_and_ignores_unknown_ids(self, store: VectorStore) -> None:
        vectors = await self._fill(store)
        await store.delete("docs", ["doc-5", "doc-6", "no-such-id"])
        assert await store.count("docs") == 18
        hits = await store.search("docs", vectors[5], top_k=20)
        assert {"doc-5", "doc-6"}.isdisjoint(h.id for h in hits)
        await store.delete("never-created", ["x"])

    async def test_where_filter_keeps_only_matching_payloads(self, store: VectorStore) -> None:
        vectors = await self._fill(store)
        hits = await store.search("docs", vectors[0], top_k=20, where={"source": "file2.md"})
        assert sorted(h.id for h in hits) == sorted(f"doc-{i}" for i in range(2, 20, 3))
        assert await store.search("docs", vectors[0], 5, where={"source": "none.md"}) == []

    async def test_unknown_collection_is_named_with_the_known_ones(
        self, store: VectorStore
    ) -> None:
        await self._fill(store, collection="alpha")
        with pytest.raises(UnknownCollectionError, match="'nope'.*alpha"):
            await store.search("nope", unit_vectors(1)[0], top_k=3)
        assert await store.count("nope") == 0

    async def test_wrong_dimension_is_refused(self, store: VectorStore) -> None:
        await self._fill(store)
        with pytest.raises(VectorStoreError):
            await store.search("docs", unit_vectors(1, dim=DIM + 1)[0], top_k=3)
        with pytest.raises(VectorStoreError):
            await store.upsert("docs", ["x"], unit_vectors(1, dim=DIM + 1), [{}])

    async def test_mismatched_batch_is_refused(self, store: VectorStore) -> None:
        with pytest.raises(VectorStoreError, match="one vector and one payload per id"):
            await store.upsert("docs", ["a", "b"], unit_vectors(1), [{}, {}])

    async def test_invalid_collection_name_is_refused(self, store: VectorStore) -> None:
        with pytest.raises(GenesisError, match="invalid collection name"):
            await store.upsert("Bad Name!", ["a"], unit_vectors(1), [{}])

    async def test_collections_drop_and_count(self, store: VectorStore) -> None:
        await self._fill(store, n=5, collection="one")
        await self._fill(store, n=3, collection="two")
        assert await store.collections() == ["one", "two"]
        assert (await store.count("one"), await store.count("two")) == (5, 3)
        await store.drop("one")
        await store.drop("one")
        assert await store.collections() == ["two"]
        with pytest.raises(UnknownCollectionError):
            await store.search("one", unit_vectors(1)[0], top_k=1)

    async def test_everything_survives_a_reopen(self, store: VectorStore) -> None:
        if not self.persistent:
            pytest.skip("this backend keeps nothing across a reopen")
        vectors = await self._fill(store)
        await store.delete("docs", ["doc-1"])
        reopened = await self.reopen(store)
        try:
            assert await reopened.collections() == ["docs"]
            assert await reopened.count("docs") == 19
            hits = await reopened.search("docs", vectors[4], top_k=1)
            assert (hits[0].id, hits[0].payload) == ("doc-4", {"source": "file1.md", "n": 4})
            assert "doc-1" not in {h.id for h in await reopened.search("docs", vectors[1], 20)}
        finally:
            await reopened.aclose()
