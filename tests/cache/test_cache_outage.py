"""Redis killed mid-run and restarted: no request fails, the breaker opens, then closes."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from genesis.cache import CircuitBreaker, RedisTokenStore, TokenCache
from genesis.tokens import HFTokenizer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class RedisServer:
    """A private ``redis-server`` on a fixed free port, with nothing persisted."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def texts(tokenizers_dir: Path, corpora_dir: Path) -> list[str]:
    files = sorted((corpora_dir / "docs").rglob("*.md"))[1:5]
    return [f.read_text(encoding="utf-8")[:2000] for f in files]


async def test_redis_outage_falls_back_to_local_tokenization_and_recovers(
    redis_server: RedisServer, tokenizers_dir: Path, texts: list[str]
) -> None:
    tok = HFTokenizer.from_file(tokenizers_dir / "gpt2")
    expected = [ids.tolist() for ids in tok.encode_batch_sync(texts)]
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=0.3)
    store = RedisTokenStore.from_url(redis_server.url, pool_size=4, socket_timeout_s=0.2)
    # l1_max_bytes=0: every request goes to Redis, so the outage is seen at once.
    cache = TokenCache(tok, store, breaker=breaker, op_timeout_s=0.5, l1_max_bytes=0)
    await cache.warm("docs", texts)
    assert (await cache.get_many("docs", texts)).tiers == ["l2"] * 4

    redis_server.kill()
    for _ in range(6):
        lookup = await cache.get_many("docs", texts)
        assert [ids.tolist() for ids in lookup.ids] == expected
        assert lookup.tiers == ["miss"] * 4
    await cache.flush()
    assert breaker.state == "open"
    assert cache.stats().errors >= 2

    redis_server.start()  # same port, empty
    await asyncio.sleep(0.35)
    first = await cache.get_many("docs", texts)  # starts the probe; never waits on it
    assert first.round_trips == 0
    for _ in range(200):
        if breaker.state == "closed":
            break
        await asyncio.sleep(0.01)
    assert breaker.state == "closed"
    probed = await cache.get_many("docs", texts)
    assert probed.round_trips == 1
    await cache.flush()  # its misses were written back
    again = await cache.get_many("docs", texts)
    assert again.tiers == ["l2"] * 4
    assert [ids.tolist() for ids in again.ids] == expected
    await cache.aclose()
