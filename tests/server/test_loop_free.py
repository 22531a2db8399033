"""A slow embedding must not hold up other requests: it runs in the executor, not the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from genesis.app import Genesis
from genesis.server import create_app
from genesis.testing.server_process import free_port

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def served(demo_home: Path) -> Iterator[tuple[str, Genesis]]:
    genesis = Genesis.from_config("dev", environ={}, overrides={"home": str(demo_home)})
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(genesis), port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 180
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "server did not start"
    try:
        yield f"http://127.0.0.1:{port}", genesis
    finally:
        server.should_exit = True
        thread.join(timeout=30)


async def test_a_slow_query_embedding_does_not_delay_health_or_other_routes(
    served: tuple[str, Genesis],
) -> None:
    url, genesis = served
    release = threading.Event()
    entered = threading.Event()
    real = genesis.embedder.embed_documents

    def slow_embed(texts: Sequence[str]) -> Any:
        # Blocks its thread (as a long forward pass would) until the test lets it go; on the
        # loop this would freeze every other request, including the probes below.
        entered.set()
        release.wait(60)
        return real(texts)

    genesis.embedder.embed_documents = slow_embed  # type: ignore[method-assign]
    async with httpx.AsyncClient(base_url=url, timeout=90) as http:
        question = f"How do I export my invoices as CSV, case {np.random.randint(1 << 30)}?"
        ask = asyncio.create_task(
            http.post("/v1/ask", json={"question": question, "agent": "support"})
        )
        assert await asyncio.to_thread(entered.wait, 60), "the embedding never started"
        for _ in range(5):
            assert (await http.get("/health")).status_code == 200
        agents = await http.get("/v1/agents")
        assert agents.status_code == 200
        assert not ask.done(), "the ask finished although its embedding is still held"
        release.set()
        response = await ask
    assert response.status_code == 200, response.text
    assert response.json()["agent"] == "support"
