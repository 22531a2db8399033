"""Shared fixtures: the real Redis, the shared corpora and tokenizers.

Under CI (``CI=true``) a missing Redis or ``../shared/`` fails the run; in a user's own clone
the tests that need them are skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GENESIS_SHARED_DIR", REPO_ROOT.parent / "shared"))
REDIS_URL = os.environ.get("GENESIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout (corpora and tokenizers); never copied into the repo."""
    if not (SHARED / "corpora").is_dir() or not (SHARED / "tokenizers").is_dir():
        _unavailable(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def tokenizers_dir(shared_dir: Path) -> Path:
    return shared_dir / "tokenizers"


@pytest.fixture(scope="session")
def corpora_dir(shared_dir: Path) -> Path:
    return shared_dir / "corpora"


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    """A client of the real Redis on 127.0.0.1:6379, from a pool; fails under CI if absent."""
    pool = aioredis.ConnectionPool.from_url(REDIS_URL, socket_timeout=2.0)
    client = aioredis.Redis(connection_pool=pool)
    try:
        await client.ping()
    except Exception as exc:  # any connection failure means "no Redis here"
        await client.aclose()
        await pool.disconnect()
        _unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    try:
        yield client
    finally:
        await client.aclose()
        await pool.disconnect()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix unique to one test, so tests never see each other's keys."""
    return f"gtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GENESIS_HOME with the demo knowledge base ingested once for the whole run."""
    import asyncio

    from genesis.app import Genesis

    home = tmp_path_factory.mktemp("demo-home")

    async def ingest() -> None:
        async with Genesis.from_config("dev", environ={}, overrides={"home": str(home)}) as g:
            await g.ensure_demo()

    asyncio.run(ingest())
    return home
