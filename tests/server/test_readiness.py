"""Readiness tells the truth about the token cache's Redis (through `genesis serve`)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from genesis.testing.server_process import free_port, serve

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def guarded_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server of this test's own that requires a password (the shared one has none,
    and against a password-less Redis redis-py's AUTH with any password succeeds)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            "the-right-one",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            done = subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
            )
            if "NOAUTH" in done.stdout or "PONG" in done.stdout:
                break
            time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_ready_is_degraded_not_ok_when_redis_refuses_the_password(
    demo_home: Path, guarded_redis: int
) -> None:
    password = "not-the-password-4711"
    url = f"redis://:{password}@127.0.0.1:{guarded_redis}/0"
    with serve(demo_home, f"redis.url={url}") as server:
        response = httpx.get(server.url + "/health/ready", timeout=30)
        assert response.status_code == 200  # still serving: the cache is an optimisation
        report = response.json()
        assert report["status"] == "degraded"
        assert report["token_cache"]["state"] == "down"
        assert report["token_cache"]["store"] == "RedisTokenStore"
        assert password not in response.text
        assert password not in server.log_text()
        # Requests are still answered, tokenizing locally.
        answer = httpx.post(
            server.url + "/v1/ask", json={"question": "How do I rotate an API key?"}, timeout=60
        )
        assert answer.status_code == 200, answer.text
