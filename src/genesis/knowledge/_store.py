"""The `VectorStore` protocol every vector backend implements, and shared helpers."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from genesis.errors import RetrievalError, UnknownCollectionError, VectorStoreError

COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True, slots=True)
class VectorHit:
    """One search result: ``score`` is the cosine similarity (higher is better)."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class VectorStore(Protocol):
    """Named collections of ``(id, vector, payload)`` points, searched by cosine similarity.

    Contract (checked by `genesis.testing.vector_store_contract`):
    - A collection exists once something was upserted into it; its dimension is fixed by the
      first upsert, and a vector of another dimension raises `VectorStoreError`.
    - ``upsert`` inserts or replaces whole points (vector and payload) by string id; ids within
      one call must be unique. Payloads are JSON-like dicts.
    - ``delete`` removes the ids that exist and ignores the others; on an unknown collection it
      does nothing.
    - ``search`` returns at most ``top_k`` hits, best first, ``score`` = cosine similarity
      in [-1, 1]; ``where`` keeps only points whose payload equals every given key/value.
      On an unknown collection it raises `UnknownCollectionError` naming it and the known ones.
    - ``count`` is the number of points (0 for an unknown collection); ``drop`` removes a
      collection (no-op if unknown); ``collections`` lists names, sorted.
    - Persistent stores keep everything after ``aclose()`` and a reopen; all stores translate
      their vendor errors into `VectorStoreError`.
    """

    async def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: npt.NDArray[np.float32],
        payloads: Sequence[Mapping[str, Any]],
    ) -> None: ...

    async def delete(self, collection: str, ids: Sequence[str]) -> None: ...

    async def search(
        self,
        collection: str,
        vector: npt.NDArray[np.float32],
        top_k: int,
        where: Mapping[str, str] | None = None,
    ) -> list[VectorHit]: ...

    async def count(self, collection: str) -> int: ...

    async def drop(self, collection: str) -> None: ...

    async def collections(self) -> list[str]: ...

    async def aclose(self) -> None: ...


def check_collection_name(name: str) -> str:
    """Return ``name`` if it is a valid collection name, else raise `RetrievalError`."""
    if not isinstance(name, str) or not COLLECTION_NAME.match(name):
        raise RetrievalError(
            f"invalid collection name {name!r}: use 1-63 characters a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def unknown_collection(name: str, known: Iterable[str]) -> UnknownCollectionError:
    names = ", ".join(sorted(known)) or "none"
    return UnknownCollectionError(f"unknown collection {name!r} (known collections: {names})")


def check_points(
    ids: Sequence[str], vectors: npt.NDArray[Any], payloads: Sequence[Mapping[str, Any]]
) -> npt.NDArray[np.float32]:
    """Validate an upsert batch; return the vectors as a C-contiguous 2-D float32 array."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(ids) or len(payloads) != len(ids):
        raise VectorStoreError(
            f"upsert needs one vector and one payload per id: {len(ids)} ids, "
            f"vectors of shape {matrix.shape}, {len(payloads)} payloads"
        )
    if len(set(ids)) != len(ids):
        raise VectorStoreError("upsert got the same id twice in one call")
    if not np.isfinite(matrix).all():
        raise VectorStoreError("upsert got a vector with NaN or infinite values")
    return matrix


def check_query(vector: npt.NDArray[Any], dim: int, top_k: int) -> npt.NDArray[np.float32]:
    """Validate a query vector against the collection's ``dim``; return it as 1-D float32."""
    query = np.asarray(vector, dtype=np.float32).reshape(-1)
    if query.shape[0] != dim:
        raise VectorStoreError(f"query vector has {query.shape[0]} dimensions, collection {dim}")
    if top_k < 1:
        raise VectorStoreError(f"top_k must be >= 1, got {top_k}")
    return query


def matches(payload: Mapping[str, Any], where: Mapping[str, str] | None) -> bool:
    return where is None or all(payload.get(k) == v for k, v in where.items())
