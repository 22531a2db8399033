"""Session stores: the same contract in-process and on the real Redis, and the Redis store's
one round trip per read and per append, counted on the client's own connections."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from genesis.memory import (
    InProcessSessionStore,
    RedisSessionStore,
    SessionLimits,
    SessionStore,
    StoredTurn,
)

REDIS_URL = os.environ.get("GENESIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LIMITS = SessionLimits(max_turns=3, ttl_s=600, max_turn_chars=300)


class CountingConnection(aioredis.Connection):
    """A real connection that counts its writes: one write per round trip (redis-py sends a
    pipeline's commands in one ``send_packed_command``)."""

    writes = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def counted_redis(redis_client: aioredis.Redis) -> AsyncIterator[aioredis.Redis]:
    pool = aioredis.ConnectionPool.from_url(REDIS_URL, connection_class=CountingConnection)
    client = aioredis.Redis(connection_pool=pool)
    await client.ping()  # the connection's handshake is done before counting starts
    try:
        yield client
    finally:
        await client.aclose()
        await pool.disconnect()


@pytest.fixture(params=["in-process", "redis"])
async def store(
    request: pytest.FixtureRequest, counted_redis: aioredis.Redis, redis_prefix: str
) -> AsyncIterator[SessionStore]:
    if request.param == "in-process":
        yield InProcessSessionStore(LIMITS)
        return
    built = RedisSessionStore(counted_redis, LIMITS, prefix=redis_prefix[:16])
    yield built
    keys = [k async for k in counted_redis.scan_iter(match=f"{redis_prefix[:16]}:*")]
    if keys:
        await counted_redis.delete(*keys)


def _turn(n: int) -> StoredTurn:
    return StoredTurn(f"question {n}", f"answer {n}", "support", 1_000.0 + n)


async def test_turns_come_back_oldest_first_and_only_the_newest_are_kept(
    store: SessionStore,
) -> None:
    for n in range(5):
        await store.append("app", "s-1", _turn(n))
    view = await store.read("app", "s-1")
    assert [t.question for t in view.turns] == ["question 2", "question 3", "question 4"]
    assert view.ttl_s is not None and 0 < view.ttl_s <= LIMITS.ttl_s


async def test_a_session_belongs_to_the_key_that_wrote_it(store: SessionStore) -> None:
    await store.append("app", "shared-id", _turn(1))
    assert (await store.read("other", "shared-id")).turns == []
    assert await store.forget("other", "shared-id") is False
    assert len((await store.read("app", "shared-id")).turns) == 1


async def test_forget_deletes_the_session(store: SessionStore) -> None:
    await store.append("app", "s-2", _turn(1))
    assert await store.forget("app", "s-2") is True
    assert (await store.read("app", "s-2")).turns == []
    assert await store.forget("app", "s-2") is False


async def test_each_turn_is_bounded_in_size(store: SessionStore) -> None:
    await store.append("app", "s-3", StoredTurn("q" * 5000, "a" * 5000, "support", 1.0))
    [turn] = (await store.read("app", "s-3")).turns
    assert len(turn.question) == len(turn.answer) == LIMITS.max_turn_chars
    assert turn.answer.endswith("[truncated]")


@pytest.mark.parametrize("bad", ["", "../etc", "a b", "x" * 129, "-lead"])
async def test_session_ids_are_bounded(store: SessionStore, bad: str) -> None:
    with pytest.raises(ValueError, match="session id"):
        await store.read("app", bad)


async def test_in_process_sessions_expire_and_are_bounded_in_number() -> None:
    now = [0.0]
    store = InProcessSessionStore(LIMITS, max_sessions=2, clock=lambda: now[0])
    for sid in ("a", "b", "c"):
        await store.append("app", sid, _turn(1))
    assert (await store.read("app", "a")).turns == []  # least recently used went first
    now[0] += LIMITS.ttl_s + 1
    assert (await store.read("app", "c")).turns == []


async def test_redis_reads_and_appends_are_one_round_trip_each(
    counted_redis: aioredis.Redis, redis_prefix: str
) -> None:
    store = RedisSessionStore(counted_redis, LIMITS, prefix=redis_prefix[:16])
    for n in range(4):
        before = CountingConnection.writes
        await store.append("app", "s-rt", _turn(n))
        assert CountingConnection.writes - before == 1
    before = CountingConnection.writes
    view = await store.read("app", "s-rt")
    assert CountingConnection.writes - before == 1
    assert len(view.turns) == LIMITS.max_turns
    assert await counted_redis.llen(store.key("app", "s-rt")) == LIMITS.max_turns
    assert 0 < await counted_redis.ttl(store.key("app", "s-rt")) <= LIMITS.ttl_s
    await counted_redis.delete(store.key("app", "s-rt"))


async def test_a_foreign_entry_in_the_list_is_never_served(
    counted_redis: aioredis.Redis, redis_prefix: str
) -> None:
    store = RedisSessionStore(counted_redis, LIMITS, prefix=redis_prefix[:16])
    await store.append("app", "s-bad", _turn(1))
    await counted_redis.rpush(store.key("app", "s-bad"), b"\xff not json")
    assert [t.question for t in (await store.read("app", "s-bad")).turns] == ["question 1"]
    await counted_redis.delete(store.key("app", "s-bad"))
