"""BM25 scoring, persistence and reciprocal rank fusion."""

from __future__ import annotations

from pathlib import Path

import pytest

from genesis.errors import RetrievalError
from genesis.knowledge import BM25Index, bm25_terms, rrf_fuse

DOCS = {
    "path": "Path parameters are declared in the path of the route, like /items/{item_id}.",
    "query": "Query parameters are the key-value pairs after the ? in the URL.",
    "body": "A request body is data sent by the client, declared with Pydantic models.",
    "cors": "CORS middleware allows browsers to call the API from another origin.",
}


@pytest.fixture
def index() -> BM25Index:
    return BM25Index.build(list(DOCS), list(DOCS.values()))


def test_terms_are_lowercased_words_without_stopwords() -> None:
    assert bm25_terms("How do I use the CORS_Middleware?") == ["use", "cors_middleware"]


def test_search_ranks_the_document_with_the_rare_terms_first(index: BM25Index) -> None:
    hits = index.search("how do I declare path parameters", top_k=3)
    assert hits[0][0] == "path"
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert index.search("pydantic models", 1)[0][0] == "body"


def test_search_returns_only_matching_documents(index: BM25Index) -> None:
    assert [i for i, _ in index.search("middleware origin", 10)] == ["cors"]
    assert index.search("the of and", 5) == []
    assert index.search("zebra", 5) == []


def test_save_and_load_give_the_same_results(index: BM25Index, tmp_path: Path) -> None:
    path = tmp_path / "bm25" / "docs.npz"
    index.save(path)
    loaded = BM25Index.load(path)
    assert len(loaded) == 4
    for query in ("path parameters", "client data", "browsers API"):
        assert loaded.search(query, 4) == index.search(query, 4)


def test_load_of_a_broken_file_is_a_retrieval_error(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(b"not an index")
    with pytest.raises(RetrievalError, match="x.npz"):
        BM25Index.load(tmp_path / "x.npz")


def test_empty_index_searches_to_nothing() -> None:
    assert BM25Index.build([], []).search("anything", 3) == []


def test_rrf_scores_sum_reciprocal_ranks() -> None:
    fused = rrf_fuse([["a", "b", "c"], ["b", "d"]], k=60)
    assert [i for i, _ in fused] == ["b", "a", "d", "c"]
    assert dict(fused)["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert dict(fused)["d"] == pytest.approx(1 / 62)


def test_rrf_weights_favour_a_ranking() -> None:
    fused = rrf_fuse([["a", "b"], ["b", "a"]], k=0, weights=[3.0, 1.0])
    assert [i for i, _ in fused] == ["a", "b"]
    with pytest.raises(RetrievalError, match="weights"):
        rrf_fuse([["a"]], weights=[1.0, 2.0])
