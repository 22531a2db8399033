"""A `VectorStore` on Qdrant (a server or cluster at scale; local mode in tests).

Qdrant ids must be unsigned ints or UUIDs, so a string id is mapped to ``uuid5`` and kept
in the payload under ``_genesis_id``; every qdrant-client error becomes `VectorStoreError`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.common.client_exceptions import QdrantException
from qdrant_client.http.exceptions import ApiException

from genesis._executor import run_cpu
from genesis.errors import VectorStoreError
from genesis.knowledge._store import (
    VectorHit,
    check_collection_name,
    check_points,
    check_query,
    unknown_collection,
)

logger = logging.getLogger(__name__)

_ID_KEY = "_genesis_id"
_NAMESPACE = uuid.UUID("5b0d4c1e-8f3a-4f57-9d2e-6a1c3e0b7f21")


def point_id(id_: str) -> str:
    """The Qdrant point id (a UUID string) of the Genesis id ``id_``."""
    return str(uuid.uuid5(_NAMESPACE, id_))


@asynccontextmanager
async def _translated(action: str) -> AsyncIterator[None]:
    # Local mode raises ValueError/KeyError, a server raises ApiException subclasses (and
    # QdrantException ones such as ResourceExhaustedResponse on 429); transports raise httpx
    # errors or OSError/RuntimeError subclasses.
    try:
        yield
    except (
        ApiException,
        QdrantException,
        httpx.HTTPError,
        ValueError,
        KeyError,
        OSError,
        RuntimeError,
    ) as exc:
        raise VectorStoreError(f"qdrant {action} failed: {exc}") from exc


class QdrantVectorStore:
    """`VectorStore` over an injected ``AsyncQdrantClient`` (the caller owns its lifecycle
    unless ``close_client`` is true)."""

    def __init__(self, client: AsyncQdrantClient, *, close_client: bool = True) -> None:
        self._client = client
        self._close_client = close_client
        # Collection dimensions, so a search costs one round trip instead of three.
        self._dims: dict[str, int] = {}

    async def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: npt.NDArray[np.float32],
        payloads: Sequence[Mapping[str, Any]],
    ) -> None:
        """Insert or replace points; creates the collection (cosine) on first use."""
        check_collection_name(collection)
        matrix = check_points(ids, vectors, payloads)
        if not ids:
            return
        await self._ensure(collection, matrix.shape[1])
        # Building and validating thousands of pydantic points is CPU work: off the loop.
        points = await run_cpu(_points, ids, matrix, payloads)
        async with _translated(f"upsert into {collection!r}"):
            await self._client.upsert(collection, points=points, wait=True)

    async def delete(self, collection: str, ids: Sequence[str]) -> None:
        if not ids or not await self._exists(collection):
            return
        selector = models.PointIdsList(points=[point_id(i) for i in ids])
        async with _translated(f"delete from {collection!r}"):
            await self._client.delete(collection, points_selector=selector, wait=True)

    async def search(
        self,
        collection: str,
        vector: npt.NDArray[np.float32],
        top_k: int,
        where: Mapping[str, str] | None = None,
    ) -> list[VectorHit]:
        """The ``top_k`` most similar points, best first; see `VectorStore`."""
        dim = await self._dim(collection)
        query = check_query(vector, dim, top_k)
        condition = None
        if where:
            condition = models.Filter(
                must=[
                    models.FieldCondition(key=k, match=models.MatchValue(value=v))
                    for k, v in where.items()
                ]
            )
        async with _translated(f"search in {collection!r}"):
            result = await self._client.query_points(
                collection,
                query=query.tolist(),
                limit=top_k,
                query_filter=condition,
                with_payload=True,
            )
        return [_hit(p) for p in result.points]

    async def count(self, collection: str) -> int:
        if not await self._exists(collection):
            return 0
        async with _translated(f"count of {collection!r}"):
            return int((await self._client.count(collection, exact=True)).count)

    async def drop(self, collection: str) -> None:
        self._dims.pop(collection, None)
        if await self._exists(collection):
            async with _translated(f"drop of {collection!r}"):
                await self._client.delete_collection(collection)

    async def collections(self) -> list[str]:
        async with _translated("list collections"):
            found = await self._client.get_collections()
        return sorted(c.name for c in found.collections)

    async def aclose(self) -> None:
        if self._close_client:
            async with _translated("close"):
                await self._client.close()

    async def _exists(self, collection: str) -> bool:
        async with _translated(f"lookup of {collection!r}"):
            return bool(await self._client.collection_exists(collection))

    async def _dim(self, collection: str) -> int:
        if collection in self._dims:
            return self._dims[collection]
        if not await self._exists(collection):
            raise unknown_collection(collection, await self.collections())
        async with _translated(f"lookup of {collection!r}"):
            info = await self._client.get_collection(collection)
        params = info.config.params.vectors
        if not isinstance(params, models.VectorParams):
            raise VectorStoreError(f"qdrant collection {collection!r} has named vectors")
        self._dims[collection] = int(params.size)
        return self._dims[collection]

    async def _ensure(self, collection: str, dim: int) -> None:
        if collection in self._dims or await self._exists(collection):
            existing = await self._dim(collection)
            if existing != dim:
                raise VectorStoreError(
                    f"collection {collection!r} holds {existing}-d vectors, got {dim}-d"
                )
            return
        params = models.VectorParams(size=dim, distance=models.Distance.COSINE)
        async with _translated(f"create {collection!r}"):
            await self._client.create_collection(collection, vectors_config=params)


def _points(
    ids: Sequence[str], matrix: npt.NDArray[np.float32], payloads: Sequence[Mapping[str, Any]]
) -> list[models.PointStruct]:
    return [
        models.PointStruct(
            id=point_id(id_), vector=matrix[n].tolist(), payload={**payloads[n], _ID_KEY: id_}
        )
        for n, id_ in enumerate(ids)
    ]


def _hit(point: models.ScoredPoint) -> VectorHit:
    payload = dict(point.payload or {})
    id_ = str(payload.pop(_ID_KEY, point.id))
    return VectorHit(id=id_, score=float(point.score), payload=payload)
