"""Session memory through `genesis serve` as a user runs it, with sessions in the real Redis:
turns remembered across requests and across a restart, one key's sessions hidden from
another, the Redis commands of a request (MONITOR), and the extractive backend's stream."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from genesis.testing.server_process import ServerProcess, api_key_for, config_with_keys, serve

pytestmark = [pytest.mark.slow, pytest.mark.integration]

FIRST = "How do I rotate an API key?"
SECOND = "How long does the old key keep working?"


@pytest.fixture(scope="module")
def redis_url() -> str:
    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"Redis not reachable at {url}: {exc} (required under CI=true)")
        pytest.skip(f"Redis not reachable at {url}: {exc}")
    return url


@pytest.fixture(scope="module")
def launch(
    demo_home: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    config = config_with_keys(
        tmp_path_factory.mktemp("config"), {"app": ["query"], "other": ["query"]}
    )
    prefix = f"gsess{tmp_path_factory.getbasetemp().name[-8:]}".replace("-", "")[:16]

    def start() -> Any:
        return serve(
            demo_home,
            f"redis.url={redis_url}",
            f"sessions.prefix={prefix}",
            global_args=["--config-dir", str(config)],
        )

    yield start
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)


def _http(server: ServerProcess, key: str = "app") -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key_for(key)}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def _ask(http: httpx.Client, question: str, session: str) -> dict[str, Any]:
    response = http.post("/v1/ask", json={"question": question, "session_id": session})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_session_remembers_across_requests_and_a_restart(launch: Any) -> None:
    with launch() as server, _http(server) as http:
        first = _ask(http, FIRST, "conv-1")
        assert first["answer"]["usage"]["history_turns"] == 0
        second = _ask(http, SECOND, "conv-1")
        # The first exchange entered the second prompt, in tokens.
        assert second["answer"]["usage"]["history_turns"] == 1
        assert second["answer"]["usage"]["history_tokens"] > 0
        turns = http.get("/v1/sessions/conv-1").json()["turns"]
        assert [t["question"] for t in turns] == [FIRST, SECOND]
        assert turns[0]["answer"] == first["answer"]["answer"]
    with launch() as server, _http(server) as http:  # a new process, the same Redis
        session = http.get("/v1/sessions/conv-1")
        assert session.status_code == 200, session.text
        assert [t["question"] for t in session.json()["turns"]] == [FIRST, SECOND]
        third = http.post(
            "/v1/agents/support/query",
            json={"question": "And for test keys?", "session_id": "conv-1"},
        ).json()
        assert third["answer"]["usage"]["history_turns"] == 2


def test_sessions_are_per_key_and_can_be_forgotten(launch: Any) -> None:
    with launch() as server, _http(server) as http, _http(server, "other") as other:
        _ask(http, FIRST, "conv-2")
        assert other.get("/v1/sessions/conv-2").status_code == 404
        assert other.delete("/v1/sessions/conv-2").json() == {"id": "conv-2", "deleted": False}
        assert http.get("/v1/sessions/conv-2").status_code == 200
        assert http.delete("/v1/sessions/conv-2").json() == {"id": "conv-2", "deleted": True}
        missing = http.get("/v1/sessions/conv-2")
        assert missing.status_code == 404
        assert set(missing.json()["error"]) == {"type", "message"}
        assert http.get("/v1/sessions/bad%20id").status_code == 422


def test_a_request_reads_and_appends_its_session_in_one_command_batch_each(
    launch: Any, redis_url: str
) -> None:
    log: list[str] = []
    ready = threading.Event()

    def watch() -> None:
        with redis.Redis.from_url(redis_url).monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                log.append(str(command.get("command", "")))
                if log[-1] == "EXEC" and any(c.startswith("RPUSH") and "conv-3" in c for c in log):
                    return

    with launch() as server, _http(server) as http:
        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        assert ready.wait(10)
        _ask(http, FIRST, "conv-3")
        thread.join(timeout=20)
    mine = [c.split(" ")[0].upper() for c in log if "conv-3" in c]
    # One pipelined read (LRANGE + TTL), one MULTI append (RPUSH, LTRIM, EXPIRE), no more.
    assert mine == ["LRANGE", "TTL", "RPUSH", "LTRIM", "EXPIRE"]
    push = next(i for i, c in enumerate(log) if c.startswith("RPUSH") and "conv-3" in c)
    assert log[push - 1] == "MULTI" and log[push + 3] == "EXEC"


def test_the_openai_endpoint_keeps_a_session_and_streams_extractive_answers_in_one_chunk(
    launch: Any,
) -> None:
    with launch() as server, _http(server) as http:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=api_key_for("app"))
        header = {"X-Genesis-Session": "chat-1"}
        stream = client.chat.completions.create(
            model="genesis",
            messages=[{"role": "user", "content": FIRST}],
            stream=True,
            extra_headers=header,
        )
        texts = [c.choices[0].delta.content for c in stream if c.choices]
        content = [t for t in texts if t]
        assert len(content) == 1 and content[0].startswith("Extractive answer")
        reply = client.chat.completions.create(
            model="support",
            messages=[
                {"role": "system", "content": "Answer briefly."},  # not a conversation
                {"role": "user", "content": SECOND},
            ],
            extra_headers=header,
        )
        usage = reply.model_extra["genesis"]["answer"]["usage"]  # type: ignore[index]
        assert usage["history_turns"] == 2  # the stored turn, then the system message
        # `user` names the session when no header does.
        client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": FIRST}], user="chat-2"
        )
        turns = http.get("/v1/sessions/chat-1").json()["turns"]
        assert [t["question"] for t in turns] == [FIRST, SECOND]
        assert len(http.get("/v1/sessions/chat-2").json()["turns"]) == 1
