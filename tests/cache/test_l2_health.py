"""`TokenCache.l2_health`: the readiness check of the L2 store (issue 7 item 5, Redis half)."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis_servers import RedisServer

from genesis.cache import MemoryTokenStore, RedisClusterTokenStore, RedisTokenStore, TokenCache
from genesis.tokens import HFTokenizer


@pytest.fixture(scope="module")
def gpt2(tokenizers_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizers_dir / "gpt2")


def _with_password(server: RedisServer, password: str) -> str:
    return f"redis://:{password}@127.0.0.1:{server.port}/0"


@pytest.mark.integration
async def test_a_redis_that_refuses_our_password_is_down_and_the_reason_hides_it(
    auth_redis: RedisServer, gpt2: HFTokenizer
) -> None:
    url = _with_password(auth_redis, "wrong-password-s3cr3t")
    cache = TokenCache(gpt2, RedisTokenStore.from_url(url))
    health = await cache.l2_health()
    assert health["state"] == "down"
    assert "wrong-password-s3cr3t" not in str(health)
    assert "Authentication" in health["reason"] or "invalid" in health["reason"]
    await cache.aclose()


@pytest.mark.integration
async def test_a_redis_without_our_password_is_down(
    auth_redis: RedisServer, gpt2: HFTokenizer
) -> None:
    cache = TokenCache(gpt2, RedisTokenStore.from_url(auth_redis.url))
    assert (await cache.l2_health())["state"] == "down"
    await cache.aclose()


@pytest.mark.integration
async def test_a_redis_with_the_right_password_is_ok(
    auth_redis: RedisServer, gpt2: HFTokenizer
) -> None:
    cache = TokenCache(gpt2, RedisTokenStore.from_url(_with_password(auth_redis, "right-password")))
    health = await cache.l2_health()
    assert health["state"] == "ok" and health["reason"] is None
    assert health["latency_ms"] >= 0 and health["breaker"] == "closed"
    await cache.aclose()


@pytest.mark.integration
async def test_a_stopped_redis_is_down(lone_redis: RedisServer, gpt2: HFTokenizer) -> None:
    cache = TokenCache(gpt2, RedisTokenStore.from_url(lone_redis.url))
    assert (await cache.l2_health())["state"] == "ok"
    lone_redis.kill()
    health = await cache.l2_health()
    assert health["state"] == "down" and "Connection" in health["reason"]
    await cache.aclose()


async def test_no_l2_is_none_and_a_memory_store_is_ok(gpt2: HFTokenizer) -> None:
    assert (await TokenCache(gpt2, None).l2_health())["state"] == "none"
    assert (await TokenCache(gpt2, MemoryTokenStore()).l2_health())["state"] == "ok"


@pytest.mark.integration
async def test_a_healthy_cluster_is_ok(redis_cluster: str, gpt2: HFTokenizer) -> None:
    cache = TokenCache(gpt2, RedisClusterTokenStore.from_url(redis_cluster, pool_size=2))
    health = await cache.l2_health()
    assert health["state"] == "ok", health
    await cache.aclose()
