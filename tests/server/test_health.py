"""Health through `genesis serve`: liveness, readiness per dependency (degraded with Redis
stopped, 503 with the knowledge store gone) and a real request per agent."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.testing.server_process import free_port, serve
from genesis.tokens import HFTokenizer

pytestmark = [pytest.mark.slow, pytest.mark.integration]

FINETUNED = "ft:open-mistral-7b:genesis:support-v3"


@dataclass
class _Redis:
    proc: subprocess.Popen[bytes]
    port: int


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[_Redis]:
    """A redis-server of this test's own, which the test stops."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed")
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([exe, *args, "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            ping = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True)
            if b"PONG" in ping.stdout:
                break
            time.sleep(0.05)
        yield _Redis(proc, port)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _ready(url: str) -> httpx.Response:
    return httpx.get(url + "/health/ready", timeout=30)


def test_liveness_and_readiness_report_each_dependency_and_degrade_without_redis(
    demo_home: Path, tokenizers_dir: Path, own_redis: _Redis
) -> None:
    port = own_redis.port
    tokenizer = HFTokenizer.from_file(tokenizers_dir / "mistral-7b-v0.1")
    with (
        FakeOpenAIServer(tokenizer, [FINETUNED, "open-mistral-7b"]) as llm,
        serve(
            demo_home,
            f"redis.url=redis://127.0.0.1:{port}/0",
            "llm.backend=chat",
            f"llm.base_url={llm.base_url}",
            "observability.agent_check_interval_s=600",
        ) as server,
    ):
        assert httpx.get(server.url + "/health/live").json() == {"status": "ok"}
        healthy = _ready(server.url)
        assert healthy.status_code == 200
        report = healthy.json()
        assert report["status"] == "ok"
        checks = report["checks"]
        assert {"knowledge", "token_cache", "llm", "event_store", "session_store"} <= set(checks)
        for check in checks.values():
            assert check["state"] == "ok" and check["latency_ms"] >= 0
        assert checks["knowledge"]["critical"] and not checks["token_cache"]["critical"]
        assert checks["knowledge"]["collections"]["support"] > 0
        assert checks["token_cache"]["store"] == "RedisTokenStore"
        assert checks["llm"]["models"] == 2  # the fake's GET /v1/models, really called

        # A real request through the agent's pipeline and model; then its remembered result.
        first = httpx.get(server.url + "/health/agents/support", timeout=60)
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "ok" and first.json()["model"] == FINETUNED
        assert first.json()["cached"] is False
        assert len(llm.calls(FINETUNED, "chat")) == 1
        again = httpx.get(server.url + "/health/agents/support", timeout=60).json()
        assert again["cached"] is True and len(llm.calls(FINETUNED, "chat")) == 1
        assert httpx.get(server.url + "/health/agents/nobody").status_code == 404

        own_redis.proc.terminate()
        own_redis.proc.wait(timeout=10)
        degraded = _ready(server.url)
        assert degraded.status_code == 200  # still serving: the cache is an optimisation
        assert degraded.json()["status"] == "degraded"
        assert degraded.json()["checks"]["token_cache"]["state"] == "down"
        assert degraded.json()["checks"]["session_store"]["state"] == "down"  # Redis too
        asked = httpx.post(server.url + "/v1/ask", json={"question": "How do I rotate a key?"})
        assert asked.status_code == 200, server.log_text()[-4000:]


def test_ready_is_503_when_the_knowledge_store_is_gone(demo_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(demo_home, home)
    with serve(home) as server:
        assert _ready(server.url).status_code == 200
        # "Gone": the embedded vector store's folder removed under the running server. It
        # still holds vectors in memory, but could neither reload them nor ingest.
        shutil.rmtree(home / "knowledge" / "vectors")
        down = _ready(server.url)
        assert down.status_code == 503
        report = down.json()
        assert report["status"] == "down"
        assert report["checks"]["knowledge"]["state"] == "down"
        assert "missing" in report["checks"]["knowledge"]["reason"]
        assert report["checks"]["token_cache"]["state"] == "ok"
        assert httpx.get(server.url + "/health/live").status_code == 200


def test_an_agent_check_that_fails_is_a_503_naming_why(
    demo_home: Path, tokenizers_dir: Path
) -> None:
    tokenizer = HFTokenizer.from_file(tokenizers_dir / "mistral-7b-v0.1")
    with (
        FakeOpenAIServer(tokenizer, [FINETUNED, "open-mistral-7b"]) as llm,
        serve(
            demo_home,
            "llm.backend=chat",
            f"llm.base_url={llm.base_url}",
            "llm.max_retries=0",
            "observability.agent_check_timeout_s=1",
        ) as server,
    ):
        llm.script(FINETUNED, ["timeout"])
        llm.script("open-mistral-7b", ["timeout"])
        response = httpx.get(server.url + "/health/agents/support", timeout=60)
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "down" and "1 s" in body["reason"]
