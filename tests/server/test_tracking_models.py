"""Cost and the fallback fact of a request served by a real model server (the fake
vLLM/OpenAI server, which counts real tokens): priced per model, recorded in the event."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from genesis.app import Genesis
from genesis.events import open_event_store
from genesis.server import create_app
from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.testing.server_process import api_key_for
from genesis.tokens import HFTokenizer

pytestmark = [pytest.mark.slow, pytest.mark.integration]

FINETUNED = "ft:open-mistral-7b:genesis:support-v3"
BASELINE = "open-mistral-7b"


@pytest.fixture
def fake_server(tokenizers_dir: Path) -> Iterator[FakeOpenAIServer]:
    served = HFTokenizer.from_file(tokenizers_dir / "mistral-7b-v0.1")
    with FakeOpenAIServer(served, [FINETUNED, BASELINE]) as server:
        yield server


@contextmanager
def _serve(genesis: Genesis) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(genesis), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _overrides(home: Path, db: Path, server: FakeOpenAIServer) -> dict[str, object]:
    return {
        "home": str(home),
        "store.url": f"sqlite:///{db}",
        "tokenizer.kind": "remote",
        "tokenizer.vocab_size": "32000",
        "llm.backend": "completions",
        "llm.base_url": server.base_url,
        "llm.default_model": BASELINE,
        "llm.timeout_s": "5",
        "llm.attempt_timeout_s": "2",
        "pricing": {
            FINETUNED: {"input_per_1m": 2.0, "output_per_1m": 6.0, "cached_input_per_1m": 1.0},
            BASELINE: {"input_per_1m": 0.25, "output_per_1m": 0.5},
        },
    }


def test_cost_and_fallback_of_a_model_answer(
    demo_home: Path, fake_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    db = tmp_path / "events.db"
    overrides = _overrides(demo_home, db, fake_server)
    genesis = Genesis.from_config("dev", environ={}, overrides=overrides)
    question = {"question": "How do I rotate an API key?"}
    with _serve(genesis) as url, httpx.Client(base_url=url, timeout=60) as http:
        first = http.post("/v1/agents/support/query", json=question).json()
        fake_server.script(FINETUNED, [500, 500, 500])
        second = http.post("/v1/agents/support/query", json=question).json()
    store = open_event_store(f"sqlite:///{db}")
    events = {e.request_id: e for e in store.events()}
    store.close()
    cost = first["cost"]
    assert cost["model"] == FINETUNED and cost["completion_tokens"] > 0
    usage = first["answer"]["usage"]
    expected = (
        (usage["prompt_tokens"] - usage["cached_tokens"]) * 2.0
        + usage["cached_tokens"] * 1.0
        + usage["completion_tokens"] * 6.0
    ) / 1e6
    assert cost["total_usd"] == pytest.approx(expected)
    assert events[first["request_id"]].cost_usd == pytest.approx(expected)
    assert events[first["request_id"]].fallback is False
    # The fine-tuned model failed: the baseline answered, at the baseline's price, and the
    # event says so.
    fallback = events[second["request_id"]]
    assert (fallback.model, fallback.fallback, fallback.fallback_reason) == (
        BASELINE,
        True,
        "server_error",
    )
    assert second["cost"]["model"] == BASELINE
    assert fallback.cost_usd == pytest.approx(second["cost"]["total_usd"]) and fallback.cost_usd > 0


def test_a_streamed_answer_is_priced_when_the_stream_ends(
    demo_home: Path, fake_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    import openai

    db = tmp_path / "events.db"
    reply = "Create a new key, deploy it everywhere, then revoke the old key."
    fake_server.script_replies(FINETUNED, [reply])
    overrides = _overrides(demo_home, db, fake_server)
    overrides["auth.keys"] = [{"id": "app", "key": api_key_for("app"), "scopes": ["query"]}]
    genesis = Genesis.from_config("dev", environ={}, overrides=overrides)
    with (
        _serve(genesis) as url,
        openai.OpenAI(base_url=url + "/v1", api_key=api_key_for("app"), max_retries=0) as client,
    ):
        with client.chat.completions.with_streaming_response.create(
            model="support",
            messages=[{"role": "user", "content": "How do I rotate an API key?"}],
            stream=True,
            stream_options={"include_usage": True},
        ) as response:
            timing = response.headers["server-timing"]
            chunks = list(response.parse())
    # The waterfall up to the headers (the first tokens included) adds up, "other" shown.
    stages = dict(
        (name, float(dur))
        for name, _, dur in (p.strip().partition(";dur=") for p in timing.split(","))
    )
    assert {"auth", "route", "generate", "other", "total"} <= set(stages)
    assert sum(v for k, v in stages.items() if k != "total") == pytest.approx(
        stages["total"], rel=0.05
    )
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) >= 2 and "".join(texts) == reply
    last = chunks[-1]
    assert last.usage is not None and last.model_extra is not None
    extension = last.model_extra["genesis"]
    store = open_event_store(f"sqlite:///{db}")
    [recorded] = store.events()
    store.close()
    # The event holds the whole stream's completion tokens, not the first chunk's.
    assert recorded.request_id == extension["request_id"]
    assert recorded.completion_tokens == last.usage.completion_tokens > len(texts[0].split())
    assert extension["cost"]["completion_tokens"] == last.usage.completion_tokens
    assert recorded.cost_usd == pytest.approx(extension["cost"]["total_usd"])
    expected_output = last.usage.completion_tokens * 6.0 / 1e6
    assert extension["cost"]["output_usd"] == pytest.approx(expected_output)
