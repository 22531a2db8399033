"""A routed question weighs other collections; one whose search already shows that it cannot
win (its best dense score far below the best draft's) is spared the token lookup, assembly
and sentence-level evidence (`genesis.rag.may_win`)."""

from __future__ import annotations

from genesis.knowledge import Chunk, ScoredChunk
from genesis.rag import may_win
from genesis.rag._pipeline import ALTERNATE_DENSE_GATE


def _hits(*dense: float) -> list[ScoredChunk]:
    chunk = Chunk("c1", "support", "refunds.md", "Refunds", 0, "Refunds take days.", "h")
    return [ScoredChunk(chunk, d, i + 1, {"dense": d, "bm25": 3.0}) for i, d in enumerate(dense)]


def test_a_collection_far_below_the_best_draft_is_not_weighed() -> None:
    best = _hits(0.7, 0.5)
    assert not may_win(_hits(0.7 - ALTERNATE_DENSE_GATE - 0.01, 0.2), best)


def test_a_collection_close_to_or_above_the_best_draft_is_weighed() -> None:
    best = _hits(0.7, 0.5)
    assert may_win(_hits(0.7 - ALTERNATE_DENSE_GATE + 0.01), best)
    assert may_win(_hits(0.2, 0.9), best)  # its best hit counts, wherever it ranks


def test_without_dense_scores_nothing_is_spared() -> None:
    chunk = Chunk("c1", "qa", "a.md", "", 0, "text", "h")
    bm25_only = [ScoredChunk(chunk, 2.0, 1, {"bm25": 2.0})]
    assert may_win(bm25_only, bm25_only)
    assert may_win([], [])
