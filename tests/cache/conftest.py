"""Private redis-servers for the cache tests: a lone one (killed and restarted by the tests)
and a three-master Redis Cluster. Ports 17100-17110 and 17001-17003 are this suite's own."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_servers import RedisServer

CLUSTER_PORTS = (17001, 17002, 17003)
LONE_PORT = 17100
AUTH_PORT = 17101


def _need_redis_server() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        reason = "redis-server and redis-cli are not on PATH"
        # As tests/conftest.py's _unavailable: under CI a missing service fails the run.
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{reason} (required under CI=true)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def lone_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis the test may kill and restart (same port, empty again)."""
    _need_redis_server()
    server = RedisServer(tmp_path, LONE_PORT)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def auth_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis that requires the password ``right-password``."""
    _need_redis_server()
    server = RedisServer(tmp_path, AUTH_PORT, "--requirepass", "right-password")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Three masters on 127.0.0.1:17001-17003 joined by ``redis-cli --cluster create``;
    yields the URL of the first node."""
    _need_redis_server()
    nodes: list[RedisServer] = []
    try:
        for port in CLUSTER_PORTS:
            workdir = tmp_path_factory.mktemp(f"cluster-{port}")
            node = RedisServer(
                workdir, port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"
            )
            nodes.append(node)
            node.start()
        _create_cluster()
        yield f"redis://127.0.0.1:{CLUSTER_PORTS[0]}/0"
    finally:
        for node in nodes:
            node.kill()


def _create_cluster() -> None:
    addrs = [f"127.0.0.1:{port}" for port in CLUSTER_PORTS]
    subprocess.run(
        ["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = [_cluster_info(port) for port in CLUSTER_PORTS]
        if all("cluster_state:ok" in info for info in states):
            return
        time.sleep(0.1)
    raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")


def _cluster_info(port: int) -> str:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, timeout=10
    )
    return out.stdout.decode()
