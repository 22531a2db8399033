"""The L2 backend protocol (`TokenStore`) and its in-process implementation."""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


@runtime_checkable
class TokenStore(Protocol):
    """A byte store for packed token IDs (the cache's L2).

    Contract:
    - Values are opaque ``bytes``; a store never interprets them.
    - ``mget(keys)`` returns one value or ``None`` per key, in order, in ONE round trip
      (no call at all for an empty list). Expired or evicted keys read as ``None``.
    - ``mset(items, ttl_s)`` writes all items in ONE round trip (no call for an empty
      mapping), overwriting existing values; ``ttl_s`` (seconds, may be fractional) sets an
      expiry on every item, ``None`` means no expiry. Writes are not atomic as a group.
    - ``delete_prefix(prefix)`` removes every key that starts with ``prefix`` (a literal
      prefix, never a pattern) and returns how many it removed.
    - ``ttl(key)`` is the remaining lifetime in seconds: ``None`` when the key is absent,
      ``math.inf`` when it never expires.
    - ``check_memory_policy()`` reports how the store bounds its memory (never changes it):
      a dict with at least ``backend``, ``ok`` (bool) and ``warning`` (str or None).
    - ``ping()`` is a cheap check that the store answers (and accepts our credentials); it
      raises ``CacheError`` when not.
    - Failures raise ``genesis.errors.CacheError`` (vendor errors are translated).
    - ``aclose()`` releases connections; it is idempotent.
    """

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def mset(self, items: Mapping[str, bytes], ttl_s: float | None) -> None: ...

    async def delete_prefix(self, prefix: str) -> int: ...

    async def ttl(self, key: str) -> float | None: ...

    async def check_memory_policy(self) -> dict[str, Any]: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class MemoryTokenStore:
    """An in-process `TokenStore`: LRU, bounded by value bytes, TTL honoured on read.

    The embedded default when no Redis is configured. ``clock`` (monotonic seconds) is
    injectable so tests can expire entries without sleeping.
    """

    def __init__(self, max_bytes: int = 256 * 1024 * 1024, *, clock: Clock = time.monotonic):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self._max_bytes = max_bytes
        self._clock = clock
        self._data: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # value, expires_at
        self._bytes = 0
        self.evictions = 0

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        now = self._clock()
        return [self._get(key, now) for key in keys]

    async def mset(self, items: Mapping[str, bytes], ttl_s: float | None) -> None:
        expires = math.inf if ttl_s is None else self._clock() + ttl_s
        for key, value in items.items():
            self._put(key, bytes(value), expires)

    async def delete_prefix(self, prefix: str) -> int:
        doomed = [key for key in self._data if key.startswith(prefix)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    async def ttl(self, key: str) -> float | None:
        now = self._clock()
        if self._get(key, now) is None:
            return None
        return self._data[key][1] - now

    async def ping(self) -> None:
        return None

    async def check_memory_policy(self) -> dict[str, Any]:
        return {"backend": "memory", "max_bytes": self._max_bytes, "ok": True, "warning": None}

    async def aclose(self) -> None:
        self._data.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def _get(self, key: str, now: float) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            self._remove(key)
            return None
        self._data.move_to_end(key)
        return entry[0]

    def _put(self, key: str, value: bytes, expires: float) -> None:
        self._remove(key)
        if len(value) > self._max_bytes:
            return
        self._data[key] = (value, expires)
        self._bytes += len(value)
        while self._bytes > self._max_bytes:
            self._remove(next(iter(self._data)))
            self.evictions += 1

    def _remove(self, key: str) -> None:
        entry = self._data.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry[0])
