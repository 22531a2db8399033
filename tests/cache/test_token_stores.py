"""Every `TokenStore` passes the same contract; then what is specific to each."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode

from genesis.cache import (
    MemoryTokenStore,
    RedisClusterTokenStore,
    RedisTokenStore,
    SqliteTokenStore,
    TokenStore,
)
from genesis.cache._redis import memory_policy_report
from genesis.cache._sqlite import BUSY_TIMEOUT_MS
from genesis.errors import CacheError
from genesis.testing.token_store_contract import TokenStoreContract


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestMemoryTokenStore(TokenStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryTokenStore]:
        store = MemoryTokenStore(clock=FakeClock())
        yield store
        await store.aclose()

    async def advance(self, store: TokenStore, seconds: float) -> None:
        assert isinstance(store, MemoryTokenStore)
        clock = store._clock
        assert isinstance(clock, FakeClock)
        clock.now += seconds


class TestSqliteTokenStore(TokenStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqliteTokenStore]:
        store = SqliteTokenStore(tmp_path / "tokens.db", clock=FakeClock())
        yield store
        await store.aclose()

    async def advance(self, store: TokenStore, seconds: float) -> None:
        assert isinstance(store, SqliteTokenStore)
        clock = store._clock
        assert isinstance(clock, FakeClock)
        clock.now += seconds


@pytest.mark.integration
class TestRedisTokenStore(TokenStoreContract):
    @pytest.fixture
    async def store(self, redis_client: aioredis.Redis) -> AsyncIterator[RedisTokenStore]:
        store = RedisTokenStore(redis_client)
        yield store
        await store.aclose()


@pytest.mark.integration
class TestRedisTokenStoreReadLane(TokenStoreContract):
    @pytest.fixture
    async def store(self, redis_client: aioredis.Redis) -> AsyncIterator[RedisTokenStore]:
        store = RedisTokenStore(redis_client, read_connections=2)
        yield store
        await store.aclose()


@pytest.fixture
async def named_client() -> AsyncIterator[aioredis.Redis]:
    """A client whose connections (the store's read lane too) carry a unique CLIENT name."""
    name = f"gtest-lane-{uuid.uuid4().hex[:12]}"
    pool = aioredis.ConnectionPool.from_url(
        "redis://127.0.0.1:6379/0", client_name=name, max_connections=1
    )
    client = aioredis.Redis(connection_pool=pool)
    yield client
    await client.aclose()
    await pool.disconnect()


async def _connections_named(observer: aioredis.Redis, name: str) -> list[dict[str, object]]:
    clients = await observer.client_list()
    return [c for c in clients if c.get("name") == name]


@pytest.mark.integration
async def test_redis_read_lane_reuses_its_connections_and_bounds_them(
    redis_client: aioredis.Redis, named_client: aioredis.Redis, redis_prefix: str
) -> None:
    name = named_client.connection_pool.connection_kwargs["client_name"]
    keys = [f"{redis_prefix}:{i}" for i in range(5)]
    await redis_client.mset({key: key.encode() for key in keys})
    store = RedisTokenStore(named_client, read_connections=2, max_concurrency=1)
    for _ in range(20):
        assert await store.mget(keys) == [key.encode() for key in keys]
    assert len(await _connections_named(redis_client, name)) == 1
    many = await asyncio.gather(*(store.mget(keys[i:]) for i in range(5) for _ in range(20)))
    assert many == [[key.encode() for key in keys[i:]] for i in range(5) for _ in range(20)]
    # Two lane connections at most; the overflow went through the pool (one connection).
    assert 2 <= len(await _connections_named(redis_client, name)) <= 3
    await store.aclose()
    await redis_client.delete(*keys)


@pytest.mark.integration
async def test_redis_read_lane_survives_a_killed_connection_and_closes_on_aclose(
    redis_client: aioredis.Redis, named_client: aioredis.Redis, redis_prefix: str
) -> None:
    name = named_client.connection_pool.connection_kwargs["client_name"]
    key = f"{redis_prefix}:k"
    await redis_client.set(key, b"v")
    store = RedisTokenStore(named_client, read_connections=1)
    assert await store.mget([key]) == [b"v"]
    [lane] = await _connections_named(redis_client, name)
    await redis_client.client_kill_filter(_id=str(lane["id"]))
    assert await store.mget([key]) == [b"v"], "a dead idle connection is replaced, once"
    await store.aclose()
    for _ in range(200):  # the server notices the closed sockets asynchronously
        if not await _connections_named(redis_client, name):
            break
        await asyncio.sleep(0.01)
    assert await _connections_named(redis_client, name) == []
    await redis_client.delete(key)


async def test_redis_read_lane_never_waits_past_its_timeout_on_a_silent_server() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # accepts, never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisTokenStore.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout_s=0.05)
    start = time.monotonic()
    with pytest.raises(CacheError, match="MGET"):
        async with asyncio.timeout(5):  # a hang fails the test instead of stalling it
            await store.mget(["k"])
    assert time.monotonic() - start < 1.0
    await store.aclose()
    for writer in writers:
        writer.close()
        await writer.wait_closed()
    server.close()
    await server.wait_closed()


def test_redis_store_refuses_a_negative_read_lane() -> None:
    with pytest.raises(ValueError, match="read_connections"):
        RedisTokenStore(aioredis.Redis(), read_connections=-1)


async def test_sqlite_store_keeps_entries_across_reopening(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteTokenStore(tmp_path / "t.db", clock=clock)
    await store.mset({"a": b"1", "b": b"2"}, ttl_s=10)
    await store.aclose()
    await store.aclose()  # idempotent
    reopened = SqliteTokenStore(tmp_path / "t.db", clock=clock)
    assert await reopened.mget(["a", "b", "c"]) == [b"1", b"2", None]
    clock.now += 10
    assert await reopened.mget(["a"]) == [None]
    await reopened.aclose()


async def test_sqlite_store_evicts_the_oldest_written_past_max_bytes(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteTokenStore(tmp_path / "t.db", max_bytes=300, clock=clock)
    for key in "abcd":
        clock.now += 1
        await store.mset({key: b"x" * 100}, ttl_s=None)
    assert await store.mget(list("abcd")) == [None] + [b"x" * 100] * 3
    await store.aclose()


def test_sqlite_store_opens_while_another_process_creates_the_file(tmp_path: Path) -> None:
    # Two server workers starting on a fresh home: one holds the write lock while it creates
    # the file; the other's open waits for it instead of failing its start.
    path = tmp_path / "t.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE first (x)")
    release = threading.Timer(0.3, other.execute, ("COMMIT",))
    release.start()
    store = SqliteTokenStore(path)  # with a 50 ms wait this raised "database is locked"
    release.join()
    other.close()
    asyncio.run(store.mset({"k": b"v"}, ttl_s=None))
    assert asyncio.run(store.mget(["k"])) == [b"v"]


async def test_sqlite_store_writes_keep_the_short_busy_timeout(tmp_path: Path) -> None:
    store = SqliteTokenStore(tmp_path / "t.db")
    # The open's long wait is for opening only: a write behind another writer fails fast.
    assert store._conn().execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(CacheError, match="write"):
        await store.mset({"k": b"v"}, ttl_s=None)
    other.execute("ROLLBACK")
    other.close()
    await store.aclose()


async def test_sqlite_errors_become_cache_errors(tmp_path: Path) -> None:
    store = SqliteTokenStore(tmp_path / "t.db")
    other = sqlite3.connect(tmp_path / "t.db")
    other.execute("DROP TABLE tokens")
    other.commit()
    other.close()
    with pytest.raises(CacheError, match="read"):
        await store.mget(["k"])
    with pytest.raises(CacheError, match="write"):
        await store.mset({"k": b"v"}, ttl_s=1)
    with pytest.raises(CacheError, match="delete"):
        await store.delete_prefix("k")
    with pytest.raises(CacheError, match="read"):
        await store.ttl("k")
    await store.aclose()
    with pytest.raises(CacheError, match="closed"):
        await store.mget(["k"])


async def test_memory_store_is_bounded_by_bytes_and_evicts_lru() -> None:
    store = MemoryTokenStore(max_bytes=300)
    await store.mset({"a": b"x" * 100, "b": b"x" * 100, "c": b"x" * 100}, ttl_s=None)
    await store.mget(["a"])  # "a" is now the most recently used
    await store.mset({"d": b"x" * 100}, ttl_s=None)
    assert await store.mget(["a", "b", "c", "d"]) == [b"x" * 100, None, b"x" * 100, b"x" * 100]
    assert store.evictions == 1


async def test_memory_store_refuses_a_negative_bound() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        MemoryTokenStore(max_bytes=-1)


@pytest.mark.integration
async def test_redis_store_refuses_a_decoding_client() -> None:
    client = aioredis.Redis(decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisTokenStore(client)
    await client.aclose()


@pytest.mark.integration
async def test_redis_store_from_url_owns_and_closes_its_pool(redis_prefix: str) -> None:
    store = RedisTokenStore.from_url("redis://127.0.0.1:6379/0", pool_size=2)
    await store.mset({f"{redis_prefix}:k": b"v"}, ttl_s=5)
    assert await store.mget([f"{redis_prefix}:k"]) == [b"v"]
    assert await store.delete_prefix(redis_prefix) == 1
    await store.aclose()


@pytest.mark.integration
async def test_redis_errors_become_cache_errors() -> None:
    store = RedisTokenStore.from_url("redis://127.0.0.1:1/0", socket_timeout_s=0.2)
    with pytest.raises(CacheError, match="MGET"):
        await store.mget(["k"])
    with pytest.raises(CacheError, match="write"):
        await store.mset({"k": b"v"}, ttl_s=1)
    with pytest.raises(CacheError, match="delete"):
        await store.delete_prefix("k")
    await store.aclose()


@pytest.mark.integration
async def test_redis_memory_policy_is_reported_never_changed(
    redis_client: aioredis.Redis,
) -> None:
    before = await redis_client.config_get("maxmemory*")
    report = await RedisTokenStore(redis_client).check_memory_policy()
    assert report["backend"] == "redis"
    assert report["maxmemory_policy"] == before["maxmemory-policy"]
    assert report["maxmemory"] == int(before["maxmemory"])
    assert await redis_client.config_get("maxmemory*") == before


def test_memory_policy_report_warns_unless_bounded_with_lru() -> None:
    unbounded = memory_policy_report({"maxmemory": 0, "maxmemory_policy": "noeviction"})
    assert not unbounded["ok"]
    assert "maxmemory is not set" in unbounded["warning"]
    assert "noeviction" in unbounded["warning"]
    good = memory_policy_report({"maxmemory": 1 << 30, "maxmemory_policy": "allkeys-lru"})
    assert good["ok"] and good["warning"] is None


@pytest.mark.integration
class TestRedisClusterTokenStore(TokenStoreContract):
    """The same contract on a real three-master cluster (ports 17001-17003)."""

    @pytest.fixture
    async def store(self, redis_cluster: str) -> AsyncIterator[RedisClusterTokenStore]:
        store = RedisClusterTokenStore.from_url(redis_cluster, pool_size=4)
        yield store
        await store.aclose()


@pytest.mark.integration
async def test_a_cluster_request_costs_one_pipelined_round_trip_per_node(
    redis_cluster: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisClusterTokenStore.from_url(redis_cluster, pool_size=4)
    keys = [f"{redis_prefix}:k{i}" for i in range(40)]
    await store.mset({key: key.encode() for key in keys}, ttl_s=60)
    masters = await store._masters()
    slots: dict[str, set[int]] = {m.name: set() for m in masters}
    for key in keys:
        slots[store.client.get_node_from_key(key).name].add(store.client.keyslot(key))
    assert all(slots.values()), "the keys spread over every master"
    pipelines: list[str] = []
    real = ClusterNode.execute_pipeline

    async def spy(node: ClusterNode, commands: list[Any]) -> bool:
        pipelines.append(node.name)
        return await real(node, commands)

    monkeypatch.setattr(ClusterNode, "execute_pipeline", spy)
    before = await _commands_per_node(store, masters)
    assert await store.mget(keys) == [key.encode() for key in keys]
    after = await _commands_per_node(store, masters)
    assert sorted(pipelines) == sorted(slots), "one pipeline (one round trip) per node"
    for name, node_slots in slots.items():  # and in it one MGET per hash slot
        assert after[name]["mget"] - before[name]["mget"] == len(node_slots)
    monkeypatch.undo()
    assert await store.delete_prefix(redis_prefix + ":") == 40
    report = await store.check_memory_policy()
    assert set(report["nodes"]) == set(slots)
    await store.aclose()


async def _commands_per_node(
    store: RedisClusterTokenStore, masters: list[Any]
) -> dict[str, dict[str, int]]:
    out = {}
    for node in masters:
        info = await store.client.info("commandstats", target_nodes=node)
        out[node.name] = {"mget": int(info.get("cmdstat_mget", {}).get("calls", 0))}
    return out


def test_a_cluster_url_with_a_database_other_than_0_is_refused() -> None:
    with pytest.raises(ValueError, match="db"):
        RedisClusterTokenStore.from_url("redis://127.0.0.1:17001/3")
