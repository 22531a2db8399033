"""End to end through the `genesis` command on a real Redis Cluster (issue 6 item 7): one
process fills the cluster, a second fresh process takes its chunks from L2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUESTION = "How do I rotate an API key?"


def _genesis(home: Path, *args: str) -> dict[str, Any]:
    exe = shutil.which("genesis", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "genesis"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS")}
    env["GENESIS_HOME"] = str(home)
    env["OPENBLAS_NUM_THREADS"] = "1"
    done = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=env, cwd=home, timeout=300
    )
    assert done.returncode == 0, done.stderr
    payload: dict[str, Any] = json.loads(done.stdout)
    return payload


def test_a_second_process_takes_its_chunks_from_the_cluster(
    redis_cluster: str, demo_home: Path, tmp_path: Path
) -> None:
    # A copy of the ingested home without its SQLite token file: the cluster is the only L2.
    home = tmp_path / "home"
    shutil.copytree(demo_home, home, ignore=shutil.ignore_patterns("token_cache.sqlite*"))
    prefix = f"gtcli{os.getpid()}"
    settings = [
        "--set", f"redis.url={redis_cluster}",
        "--set", "redis.cluster=true",
        "--set", f"cache.prefix={prefix}",
    ]  # fmt: skip
    first = _genesis(home, *settings, "ask", QUESTION, "--json")
    second = _genesis(home, *settings, "ask", QUESTION, "--json")
    tiers_first = first["answer"]["cache_tiers"]
    tiers_second = second["answer"]["cache_tiers"]
    chunks = first["answer"]["usage"]["chunks_in_prompt"]
    assert chunks > 0
    assert tiers_first.get("l2", 0) < chunks, "the first process tokenized what it lacked"
    assert tiers_second == {"l2": chunks}, "the second took every chunk from the cluster"
    assert second["answer"]["usage"]["chunks_from_cache"] == chunks
