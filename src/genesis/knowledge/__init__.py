"""genesis.knowledge: chunking, embedding, vector stores, BM25, hybrid search, ingestion.

``QdrantVectorStore`` is imported on first access: ``import qdrant_client`` costs ~0.9 s,
which the embedded default (and every CLI start) should not pay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from genesis._lazy import lazy_exports
from genesis.knowledge._base import (
    IngestReport,
    KnowledgeBase,
    SearchMode,
    SyncSearchStore,
    embedding_text,
)
from genesis.knowledge._batcher import QueryBatcher
from genesis.knowledge._bm25 import BM25Index, bm25_terms, rrf_fuse
from genesis.knowledge._chunking import (
    SUPPORTED_EXTENSIONS,
    chunk_id,
    chunk_text,
    iter_source_files,
)
from genesis.knowledge._embedded import EmbeddedVectorStore
from genesis.knowledge._embedder import (
    Embedder,
    MiniLMEmbedder,
    Vector,
    default_model_dir,
    pin_blas_threads,
)
from genesis.knowledge._store import VectorHit, VectorStore, check_collection_name
from genesis.knowledge._text_vectors import StoredEmbeddings, TextVectorStore
from genesis.knowledge._types import Chunk, ScoredChunk, content_hash

if TYPE_CHECKING:
    from genesis.knowledge._qdrant import QdrantVectorStore

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "BM25Index",
    "Chunk",
    "EmbeddedVectorStore",
    "Embedder",
    "IngestReport",
    "KnowledgeBase",
    "MiniLMEmbedder",
    "QdrantVectorStore",
    "QueryBatcher",
    "ScoredChunk",
    "SearchMode",
    "StoredEmbeddings",
    "SyncSearchStore",
    "TextVectorStore",
    "VectorHit",
    "Vector",
    "VectorStore",
    "bm25_terms",
    "check_collection_name",
    "chunk_id",
    "chunk_text",
    "content_hash",
    "default_model_dir",
    "embedding_text",
    "iter_source_files",
    "pin_blas_threads",
    "rrf_fuse",
]


__getattr__ = lazy_exports(
    __name__,
    {
        "QdrantVectorStore": "genesis.knowledge._qdrant",
    },
)
