"""The HTTP API on a real server (uvicorn on loopback), called with a real HTTP client."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from genesis.app import Genesis
from genesis.server import create_app
from genesis.testing.server_process import api_key_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def base_url(demo_home: Path) -> Iterator[str]:
    keys = [{"id": "ops", "key": api_key_for("ops"), "scopes": ["query", "run", "admin"]}]
    genesis = Genesis.from_config(
        "dev", environ={}, overrides={"home": str(demo_home), "auth.keys": keys}
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(genesis), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {api_key_for('ops')}"}
    with httpx.Client(base_url=base_url, timeout=60, headers=headers) as http:
        yield http


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/health/ready").json()
    assert ready["status"] == "ok"
    assert ready["collections"]["support"] > 0


def test_ask_routes_and_reports_server_timing(client: httpx.Client) -> None:
    question = "My API key rotation broke our integration. How do I rotate an API key safely?"
    response = client.post("/v1/ask", json={"question": question})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["agent"] == "support"
    assert body["answer"]["sources"]
    timing = response.headers["server-timing"]
    for stage in (
        "auth",
        "route",
        "embed",
        "retrieve",
        "token_cache",
        "assemble",
        "generate",
        "tracking",
        "serialize",
        "other",
        "total",
    ):
        assert f"{stage};dur=" in timing


def test_agent_query_uses_that_agents_collection(client: httpx.Client) -> None:
    response = client.post(
        "/v1/agents/documentation/query", json={"question": "How does pagination work?"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["answer"]["collection"] == "documentation"


def test_openai_compatible_chat_endpoint(client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "support",
            "messages": [{"role": "user", "content": "How long do refunds take?"}],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["prompt_tokens"] > 0


def test_errors_are_clear(client: httpx.Client) -> None:
    unknown = client.post("/v1/agents/nobody/query", json={"question": "hi"})
    assert unknown.status_code == 404
    assert "nobody" in unknown.json()["error"]["message"]
    empty = client.post("/v1/ask", json={"question": ""})
    assert empty.status_code == 422
    no_user = client.post(
        "/v1/chat/completions", json={"messages": [{"role": "system", "content": "x"}]}
    )
    assert no_user.status_code == 422


def test_route_and_metrics(client: httpx.Client) -> None:
    route = client.post("/v1/route", json={"text": "Write pytest tests for this function"}).json()
    assert route["agent"] == "qa"
    client.post("/v1/ask", json={"question": "Which regions are available?"})
    metrics = client.get("/metrics").text
    assert "genesis_requests_total" in metrics
    assert "genesis_stage_duration_seconds_bucket" in metrics
    assert re.search(r"^genesis_token_cache_lookups_total\{.*tier=\"l1\"", metrics, re.M)


def test_agent_task_endpoint_runs_the_review(client: httpx.Client) -> None:
    source = "def add(x, items=[]):\n    items.append(x)\n    return items\n"
    response = client.post(
        "/v1/agents/code_review/run", json={"input": source, "filename": "lib.py"}
    )
    assert response.status_code == 200, response.text
    findings = response.json()["findings"]
    assert any(f["rule"] == "mutable-default" and f["line"] == 1 for f in findings)
