"""Cost tracking and the waterfall through real HTTP, on `genesis serve` started as a user
would: costs per request add up to the per-agent and per-session totals of /v1/usage,
nothing queued is lost on a clean shutdown under load, and Server-Timing adds up."""

from __future__ import annotations

import math
import os
import signal
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from genesis.events import open_event_store
from genesis.testing.server_process import api_key_for, config_with_keys, serve

pytestmark = [pytest.mark.slow, pytest.mark.integration]

KEYS = {"app1": ["query"], "app2": ["query"], "ops": ["query", "admin"]}
# Prices that make every request cost something on the offline extractive backend.
PRICES = (
    "pricing.extractive.input_per_1m=1000",
    "pricing.extractive.output_per_1m=4000",
    "pricing.extractive.cached_input_per_1m=250",
)


def _client(url: str, key: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key_for(key)}"}
    return httpx.Client(base_url=url, headers=headers, timeout=60)


def parse_server_timing(header: str) -> dict[str, float]:
    stages = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        stages[name] = float(dur)
    return stages


def _check_waterfall(response: httpx.Response, waterfall: dict[str, float]) -> None:
    stages = parse_server_timing(response.headers["server-timing"])
    assert stages == waterfall  # the header and the body tell the same story
    parts = sum(v for k, v in stages.items() if k != "total")
    assert math.isclose(parts, stages["total"], rel_tol=0.05), stages
    for name in ("auth", "route", "embed", "retrieve", "token_cache", "assemble", "generate"):
        assert name in stages
    assert {"tracking", "serialize", "other"} <= set(stages)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return config_with_keys(tmp_path / "config", KEYS)


def test_costs_per_request_add_up_to_usage_totals(
    demo_home: Path, config: Path, tmp_path: Path
) -> None:
    db = tmp_path / "events.db"
    plan: list[tuple[str, str, dict[str, Any]]] = [
        ("app1", "/v1/agents/support/query", {"question": "How do I get a refund?"}),
        ("app1", "/v1/agents/documentation/query", {"question": "How does pagination work?"}),
        ("app2", "/v1/ask", {"question": "Why was my customer's card payment declined?"}),
        ("app2", "/v1/agents/documentation/query", {"question": "Which headers authenticate?"}),
    ]
    by_agent: dict[str, float] = defaultdict(float)
    by_session: dict[str, float] = defaultdict(float)
    by_key: dict[str, float] = defaultdict(float)
    ids: set[str] = set()
    with serve(
        demo_home, f"store.url=sqlite:///{db}", *PRICES, global_args=["--config-dir", str(config)]
    ) as server:
        for round_ in range(3):
            for key, path, body in plan:
                session = f"s{round_ % 2}"
                with _client(server.url, key) as http:
                    response = http.post(path, json={**body, "session_id": session})
                assert response.status_code == 200, response.text
                answer = response.json()
                assert answer["request_id"] == response.headers["x-request-id"]
                _check_waterfall(response, answer["waterfall"])
                cost = answer["cost"]["total_usd"]
                assert cost > 0 and answer["cost"]["priced"]
                by_agent[answer["agent"]] += cost
                by_session[session] += cost
                by_key[key] += cost
                ids.add(answer["request_id"])
        with _client(server.url, "app1") as http:
            chat = http.post(
                "/v1/chat/completions",
                json={"model": "support", "messages": [{"role": "user", "content": "refund?"}]},
            )
        assert chat.status_code == 200, chat.text
        extension = chat.json()["genesis"]
        _check_waterfall(chat, extension["waterfall"])
        by_agent["support"] += extension["cost"]["total_usd"]
        by_key["app1"] += extension["cost"]["total_usd"]
        ids.add(extension["request_id"])
        with _client(server.url, "ops") as http:
            agents = http.get("/v1/usage", params={"by": "agent"}).json()
            sessions = http.get("/v1/usage", params={"by": "session"}).json()
        with _client(server.url, "app2") as http:
            own = http.get("/v1/usage", params={"by": "day"}).json()
    assert agents["scope"] == "all"
    assert {r["agent"]: r["cost_usd"] for r in agents["rows"]} == pytest.approx(by_agent)
    assert {r["session"]: r["cost_usd"] for r in sessions["rows"]} == pytest.approx(
        {**by_session, None: extension["cost"]["total_usd"]}  # the chat request has no session
    )
    assert agents["total"]["requests"] == len(ids) == 13
    # A key without admin scope sees its own requests only.
    assert own["scope"] == "key"
    assert own["total"]["cost_usd"] == pytest.approx(by_key["app2"])
    assert own["total"]["requests"] == 6
    store = open_event_store(f"sqlite:///{db}")
    assert {e.request_id for e in store.events()} == ids
    store.close()


def test_feedback_attaches_to_a_request(demo_home: Path, config: Path, tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    with serve(
        demo_home, f"store.url=sqlite:///{db}", global_args=["--config-dir", str(config)]
    ) as server:
        with _client(server.url, "app1") as http:
            answer = http.post("/v1/ask", json={"question": "How do I reset my password?"})
            request_id = answer.json()["request_id"]
            # Sent at once: the event may still be queued; the server waits for it.
            saved = http.post(
                "/v1/feedback", json={"request_id": request_id, "score": 1, "comment": "clear"}
            )
            unknown = http.post("/v1/feedback", json={"request_id": "f" * 32, "score": 0})
            too_long = http.post(
                "/v1/feedback", json={"request_id": request_id, "score": 1, "comment": "x" * 5000}
            )
            denied = http.get("/admin/tracking")
        with _client(server.url, "ops") as http:
            tracking = http.get("/admin/tracking").json()
    assert saved.status_code == 200 and saved.json()["score"] == 1.0
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "NotFound"
    assert too_long.status_code == 422
    assert denied.status_code == 403
    assert tracking["dropped"] == 0 and tracking["written"] >= 1
    store = open_event_store(f"sqlite:///{db}")
    assert store.feedback([request_id])[request_id].comment == "clear"
    store.close()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_nothing_queued_is_lost_on_a_clean_shutdown_under_load(
    demo_home: Path, config: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    db = tmp_path / "events.db"
    # A flush interval far longer than the test and one huge batch: every event is still in
    # the queue when the signal comes, so only the shutdown's drain can store them.
    settings = (
        f"store.url=sqlite:///{db}",
        "store.flush_interval_s=60",
        "store.batch_max=100000",
        "server.max_in_flight=256",
    )
    answered: list[str] = []
    lock = threading.Lock()
    with serve(demo_home, *settings, global_args=["--config-dir", str(config)]) as server:

        def ask(i: int) -> None:
            try:
                with _client(server.url, "app1") as http:
                    response = http.post(
                        "/v1/ask", json={"question": f"How do I rotate API key number {i}?"}
                    )
            except httpx.HTTPError:
                return  # refused once the server stopped accepting
            if response.status_code == 200:
                with lock:
                    answered.append(response.json()["request_id"])

        with ThreadPoolExecutor(max_workers=16) as pool:
            futures = [pool.submit(ask, i) for i in range(200)]
            while True:  # signal while requests are still arriving and in flight
                with lock:
                    if len(answered) > 60:
                        break
                threading.Event().wait(0.05)
            os.killpg(server.process.pid, stop)
            for future in futures:
                future.result()
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert server.process.wait(timeout=60) in (0, -stop), server.log_text()[-2000:]
        assert "Application shutdown complete" in server.log_text()
    store = open_event_store(f"sqlite:///{db}")
    stored = {e.request_id for e in store.events() if e.outcome == "ok"}
    store.close()
    assert len(answered) > 60
    assert set(answered) <= stored
    assert len(stored) <= 200
