"""`RedisClusterTokenStore`: the token cache's L2 on a Redis Cluster (redis-py asyncio)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, TypeVar, cast

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.maint_notifications import MaintNotificationsConfig

from genesis.cache._deadline import within
from genesis.cache._redis import escape_glob, memory_policy_report
from genesis.errors import CacheError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# What the cluster client may raise: RedisClusterException is not a RedisError.
_VENDOR_ERRORS = (RedisError, RedisClusterException, TimeoutError)
# Beyond the store's own (lag-aware) timeout, as in `RedisTokenStore`.
_BACKSTOP_S = 1.0


class RedisClusterTokenStore:
    """A `TokenStore` on a Redis Cluster (``redis.asyncio.cluster.RedisCluster``).

    Keys carry no hash tag, so a collection's chunks spread over every master. ``mget``
    is redis-py's ``mget_nonatomic``: the keys are grouped by hash slot, one MGET per slot,
    and its cluster pipeline sends each node's MGETs as ONE pipelined round trip, to all
    nodes in parallel (``ClusterPipeline._execute`` gathers one ``execute_pipeline`` task
    per node; MOVED/ASK replies are retried one by one). ``mset`` goes the same way (MSET
    per slot, or SET PX per key when entries expire). ``delete_prefix`` SCANs every master,
    ``check_memory_policy`` reads ``INFO memory`` on every master, ``ping`` pings them all.

    Every operation runs in one of ``max_concurrency`` slots (a node's pool raises "Too
    many connections" past its size instead of waiting) and under ``timeout_s`` measured
    as :func:`~genesis.cache._deadline.within` measures it. Every vendor error is re-raised
    as :class:`~genesis.errors.CacheError`. A store built by :meth:`from_url` owns its client.
    Redis Cluster has one database: 0.
    """

    def __init__(
        self,
        client: RedisCluster,
        *,
        max_concurrency: int | None = None,
        scan_count: int = 1000,
        owns_client: bool = False,
        timeout_s: float | None = None,
    ) -> None:
        self._client = client
        self._scan_count = scan_count
        self._owns_client = owns_client
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    @classmethod
    def from_url(
        cls, url: str, *, pool_size: int = 16, socket_timeout_s: float = 0.25
    ) -> RedisClusterTokenStore:
        """A store on the cluster that the node at ``url`` belongs to (the other nodes are
        discovered), with at most ``pool_size`` connections per node."""
        backstop = socket_timeout_s + _BACKSTOP_S
        try:
            client = RedisCluster.from_url(
                url,
                max_connections=pool_size,
                socket_timeout=backstop,
                socket_connect_timeout=backstop,
                # One immediate retry (after a topology refresh) instead of redis-py's
                # default of several with backoff: a cache call has milliseconds to spend.
                retry=Retry(NoBackoff(), 1),
                maint_notifications_config=MaintNotificationsConfig(enabled=False),
            )
        except RedisClusterException as exc:  # e.g. a database other than 0
            raise ValueError(f"bad Redis Cluster URL: {exc}") from exc
        return cls(client, max_concurrency=pool_size, owns_client=True, timeout_s=socket_timeout_s)

    async def _run(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        """One operation (a factory, so a cancelled wait leaves no coroutine unawaited) in a
        slot and under the timeout; vendor errors become ``CacheError``."""
        try:
            if self._slots is None:
                return await self._timed(op())
            async with self._slots:
                return await self._timed(op())
        except _VENDOR_ERRORS as exc:
            raise CacheError(f"redis cluster {what} failed: {exc!r}") from exc

    async def _timed(self, aw: Awaitable[T]) -> T:
        if self._timeout_s is None:
            return await aw
        return await within(aw, self._timeout_s)

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values = await self._run(lambda: self._client.mget_nonatomic(list(keys)), "MGET")
        return cast(list[bytes | None], values)

    async def mset(self, items: Mapping[str, bytes], ttl_s: float | None) -> None:
        if items:
            await self._run(lambda: self._write(items, ttl_s), f"write of {len(items)} keys")

    async def _write(self, items: Mapping[str, bytes], ttl_s: float | None) -> None:
        if ttl_s is None:
            await self._client.mset_nonatomic(dict(items))
            return
        ttl_ms = max(1, math.ceil(ttl_s * 1000))
        pipe = self._client.pipeline()  # grouped by node: one round trip per node
        for key, value in items.items():
            pipe.set(key, value, px=ttl_ms)
        await pipe.execute()

    async def delete_prefix(self, prefix: str) -> int:
        """SCAN MATCH ``prefix*`` on every master and UNLINK what it finds (see
        `RedisTokenStore.delete_prefix` for why SCAN)."""
        match = escape_glob(prefix) + "*"
        masters = await self._run(self._masters, "topology")
        counts = await asyncio.gather(*(self._delete_on(node, match) for node in masters))
        return sum(counts)

    async def _delete_on(self, node: ClusterNode, match: str) -> int:
        removed, cursor = 0, 0
        while True:
            cursor, keys = await self._run(partial(self._scan, node, cursor, match), "SCAN")
            if keys:
                removed += await self._run(partial(self._unlink, keys), "UNLINK")
            if cursor == 0:
                return removed

    async def _scan(self, node: ClusterNode, cursor: int, match: str) -> tuple[int, list[bytes]]:
        reply = await self._client.execute_command(
            "SCAN", cursor, "MATCH", match, "COUNT", self._scan_count, target_nodes=node
        )
        # redis-py's cluster SCAN callback answers ({node name: cursor}, keys).
        cursors, keys = reply
        return int(cursors[node.name]), list(keys)

    async def _unlink(self, keys: list[bytes]) -> int:
        pipe = self._client.pipeline()  # the keys of one node's SCAN: one round trip
        for key in keys:
            pipe.execute_command("UNLINK", key)
        return sum(int(n) for n in await pipe.execute())

    async def ttl(self, key: str) -> float | None:
        ms = int(await self._run(lambda: self._client.pttl(key), "PTTL"))
        if ms == -2:
            return None
        return math.inf if ms == -1 else ms / 1000

    async def check_memory_policy(self) -> dict[str, Any]:
        """``INFO memory`` of every master (never CONFIG SET): ok only if all are bounded
        with LRU; the report names each node that is not."""
        masters = await self._run(self._masters, "topology")
        infos = await asyncio.gather(
            *(self._run(partial(self._on, node, "INFO", "memory"), "INFO") for node in masters)
        )
        nodes = {n.name: memory_policy_report(i) for n, i in zip(masters, infos, strict=True)}
        problems = [f"{name}: {r['warning']}" for name, r in nodes.items() if r["warning"]]
        warning = "; ".join(problems) if problems else None
        if warning:
            logger.warning("token cache redis cluster: %s", warning)
        return {"backend": "redis-cluster", "nodes": nodes, "ok": not problems, "warning": warning}

    async def ping(self) -> None:
        """PING every master: the cache needs them all (each holds a share of the slots)."""
        masters = await self._run(self._masters, "topology")
        await asyncio.gather(
            *(self._run(partial(self._on, node, "PING"), "PING") for node in masters)
        )

    async def _on(self, node: ClusterNode, *command: str) -> Any:
        return await self._client.execute_command(*command, target_nodes=node)

    async def _masters(self) -> list[ClusterNode]:
        await self._client.initialize()  # a no-op once the slots are known
        return self._client.get_primaries()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> RedisClusterTokenStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def client(self) -> RedisCluster:
        return self._client
