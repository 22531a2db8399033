"""Value types shared by ingestion, retrieval and the RAG pipeline."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


def content_hash(text: str) -> str:
    """Hex SHA-256 of ``text`` (UTF-8): the content address of a chunk."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Chunk:
    """One retrievable piece of a source file.

    ``id`` is stable for (collection, source, ordinal); ``hash`` is the content hash of
    ``text`` and is what the token cache keys on, so an edited chunk is never served stale IDs.
    """

    id: str
    collection: str
    source: str  # path relative to the ingested folder, with forward slashes
    heading: str  # "Title > Section" breadcrumb, "" when the file has none
    ordinal: int  # position of the chunk within its source file
    text: str
    hash: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    """A chunk with its retrieval score (higher is better) and how it was found."""

    chunk: Chunk
    score: float
    rank: int  # 1-based rank in the final (fused) list
    # per retriever: {"dense": .., "bm25": ..}
    scores: dict[str, float] = field(default_factory=dict)
