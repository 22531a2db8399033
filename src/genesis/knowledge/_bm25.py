"""Lexical retrieval (Okapi BM25) and reciprocal rank fusion.

A compact NumPy implementation rather than ``bm25s``: ``import bm25s`` pulls scipy (~0.3 s at
every CLI start), it has no stemmer installed here anyway, and a collection is rebuilt whole
on each changed ingest, which this does in milliseconds for thousands of chunks.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from genesis.errors import RetrievalError

_WORD = re.compile(r"[a-z0-9_]+")
# A short English stop list: BM25's idf already discounts them, but dropping them keeps
# the postings small and long natural-language queries from matching everything.
_STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its "
    "me my of on or so such that the their then there these they this to was what when where "
    "which while who why will with you your".split()
)


def bm25_terms(text: str) -> list[str]:
    """Lower-cased word terms of ``text`` (letters, digits, underscore), stop words removed."""
    return [t for t in _WORD.findall(text.lower()) if t not in _STOPWORDS]


class BM25Index:
    """An immutable BM25 index over ``(id, text)`` documents, saved as one ``.npz`` file.

    A document scores ``sum over query terms of idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b *
    dl / avgdl))`` with the Lucene idf ``ln(1 + (N - df + 0.5) / (df + 0.5))``, precomputed
    per posting.
    """

    def __init__(
        self,
        ids: Sequence[str],
        vocab: dict[str, int],
        indptr: npt.NDArray[np.int64],
        docs: npt.NDArray[np.int32],
        weights: npt.NDArray[np.float32],
    ) -> None:
        self._ids = list(ids)
        self._vocab = vocab
        self._indptr = indptr
        self._docs = docs
        self._weights = weights

    @classmethod
    def build(
        cls, ids: Sequence[str], texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75
    ) -> BM25Index:
        """Index ``texts[i]`` under ``ids[i]``."""
        if len(ids) != len(texts):
            raise RetrievalError(f"BM25: {len(ids)} ids for {len(texts)} texts")
        counts = [Counter(bm25_terms(t)) for t in texts]
        lengths = np.array([sum(c.values()) for c in counts], dtype=np.float32)
        avgdl = float(lengths.mean()) if len(lengths) and float(lengths.mean()) > 0 else 1.0
        postings: dict[str, list[tuple[int, int]]] = {}
        for doc, counter in enumerate(counts):
            for term, tf in counter.items():
                postings.setdefault(term, []).append((doc, tf))
        vocab = {term: i for i, term in enumerate(sorted(postings))}
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        doc_parts: list[npt.NDArray[np.int32]] = []
        weight_parts: list[npt.NDArray[np.float32]] = []
        n = len(texts)
        for term, i in vocab.items():
            plist = np.array(postings[term], dtype=np.int64).reshape(-1, 2)
            freq = plist[:, 1].astype(np.float32)
            idf = np.log1p((n - len(plist) + 0.5) / (len(plist) + 0.5))
            norm = k1 * (1.0 - b + b * lengths[plist[:, 0]] / avgdl)
            doc_parts.append(plist[:, 0].astype(np.int32))
            weight_parts.append((idf * freq * (k1 + 1.0) / (freq + norm)).astype(np.float32))
            indptr[i + 1] = indptr[i] + len(plist)
        docs = np.concatenate(doc_parts) if doc_parts else np.zeros(0, np.int32)
        weights = np.concatenate(weight_parts) if weight_parts else np.zeros(0, np.float32)
        return cls(ids, vocab, indptr, docs, weights)

    def __len__(self) -> int:
        return len(self._ids)

    def search(self, query: str, top_k: int) -> list[tuple[str, float]]:
        """The ``top_k`` best ``(id, score)`` pairs, best first; only documents scoring > 0."""
        scores = np.zeros(len(self._ids), dtype=np.float32)
        for term in set(bm25_terms(query)):
            i = self._vocab.get(term)
            if i is not None:
                lo, hi = self._indptr[i], self._indptr[i + 1]
                scores[self._docs[lo:hi]] += self._weights[lo:hi]
        hits = np.flatnonzero(scores > 0)
        if len(hits) > top_k:
            hits = hits[np.argpartition(-scores[hits], top_k - 1)[:top_k]]
        hits = hits[np.argsort(-scores[hits], kind="stable")]
        return [(self._ids[i], float(scores[i])) for i in hits]

    def save(self, path: Path) -> None:
        """Write atomically to ``path`` (temp file, then ``os.replace``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        meta = json.dumps({"ids": self._ids, "vocab": list(self._vocab)})
        with tmp.open("wb") as fh:
            np.savez(fh, indptr=self._indptr, docs=self._docs, weights=self._weights, meta=meta)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> BM25Index:
        """Read an index written by `save`; raises `RetrievalError` if unreadable."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta: dict[str, Any] = json.loads(str(data["meta"]))
                return cls(
                    meta["ids"],
                    {term: i for i, term in enumerate(meta["vocab"])},
                    data["indptr"],
                    data["docs"],
                    data["weights"],
                )
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise RetrievalError(f"cannot read BM25 index {path}: {exc}") from exc


def rrf_fuse(
    rankings: Sequence[Sequence[str]], k: int = 60, weights: Sequence[float] | None = None
) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: ``score(id) = sum_r weight_r / (k + rank_r(id))``, ranks 1-based.

    Returns ``(id, score)`` best first; ties keep the order of first appearance.
    """
    if weights is not None and len(weights) != len(rankings):
        raise RetrievalError(f"rrf_fuse: {len(weights)} weights for {len(rankings)} rankings")
    if k < 0:
        raise RetrievalError(f"rrf_fuse: k must be >= 0, got {k}")
    scores: dict[str, float] = {}
    for r, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else float(weights[r])
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])
