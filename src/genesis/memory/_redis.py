"""The Redis session store (see ``_store.py`` for the two round trips and the keys).

A module of its own: ``import redis`` costs ~50 ms (with OpenTelemetry), which the embedded
default and every CLI start should not pay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from genesis.errors import SessionError
from genesis.memory._store import (
    SessionLimits,
    SessionView,
    StoredTurn,
    bounded_turn,
    check_session_id,
)


class RedisSessionStore:
    """Sessions as Redis lists; see the module docstring for the two round trips.

    ``round_trips`` counts the calls this store made to Redis (each a single pipeline)."""

    def __init__(
        self,
        client: aioredis.Redis,
        limits: SessionLimits | None = None,
        *,
        prefix: str = "gs",
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._limits = limits or SessionLimits()
        self._prefix = prefix
        self._owns_client = owns_client
        self.round_trips = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        limits: SessionLimits | None = None,
        *,
        prefix: str = "gs",
        socket_timeout_s: float = 0.25,
    ) -> Self:
        client = aioredis.Redis.from_url(url, socket_timeout=socket_timeout_s)
        return cls(client, limits, prefix=prefix, owns_client=True)

    @property
    def limits(self) -> SessionLimits:
        return self._limits

    def key(self, owner: str, session_id: str) -> str:
        return f"{self._prefix}:{owner}:{check_session_id(session_id)}"

    async def read(self, owner: str, session_id: str) -> SessionView:
        pipe = self._client.pipeline(transaction=False)
        key = self.key(owner, session_id)
        pipe.lrange(key, -self._limits.max_turns, -1)
        pipe.ttl(key)
        raw, ttl = await self._execute(pipe)
        turns = [t for t in (StoredTurn.decode(r) for r in raw) if t is not None]
        return SessionView(turns, float(ttl) if turns and ttl >= 0 else None)

    async def append(self, owner: str, session_id: str, turn: StoredTurn) -> None:
        key = self.key(owner, session_id)
        pipe = self._client.pipeline(transaction=True)
        pipe.rpush(key, bounded_turn(turn, self._limits.max_turn_chars).encode())
        pipe.ltrim(key, -self._limits.max_turns, -1)
        pipe.expire(key, self._limits.ttl_s)
        await self._execute(pipe)

    async def forget(self, owner: str, session_id: str) -> bool:
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(self.key(owner, session_id))
        [deleted] = await self._execute(pipe)
        return bool(deleted)

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except RedisError as exc:
            raise SessionError(f"session store (Redis) unreachable: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _execute(self, pipe: Any) -> Sequence[Any]:
        self.round_trips += 1
        try:
            result: Sequence[Any] = await pipe.execute()
        except RedisError as exc:
            raise SessionError(f"session store (Redis) failed: {type(exc).__name__}") from exc
        return result
