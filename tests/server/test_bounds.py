"""Bounded input and one error format, through `genesis serve` as a user runs it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from genesis.server._limits import BodyLimitMiddleware, InFlightLimitMiddleware
from genesis.testing.server_process import (
    ServerProcess,
    api_key_for,
    config_with_keys,
    free_port,
    serve,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    keys = {"ops": ["query", "run", "admin"], "reader": ["query"]}
    config = config_with_keys(tmp_path_factory.mktemp("config"), keys)
    with serve(demo_home, global_args=["--config-dir", str(config)]) as running:
        yield running


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {api_key_for('ops')}"}
    with httpx.Client(base_url=server.url, timeout=60, headers=headers) as http:
        yield http


def _error(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"type", "message"}, body
    return dict(body["error"])


def _operations(client: httpx.Client) -> list[tuple[str, str, str]]:
    """(method, path, scope) of every guarded operation in /openapi.json."""
    spec = client.get("/openapi.json").json()
    out = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if not op.get("security"):
                continue
            scope = (
                "admin"
                if path.startswith("/admin")
                else "run"
                if path.endswith("/run")
                else "query"
            )
            out.append((method, path, scope))
    return out


def test_every_guarded_route_needs_a_valid_key_and_its_scope(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as anonymous:
        operations = _operations(anonymous)
        open_paths = set(anonymous.get("/openapi.json").json()["paths"]) - {
            p for _, p, _ in operations
        }
        assert {"/v1/ask", "/v1/chat/completions", "/admin/cache/clear"} <= {
            p for _, p, _ in operations
        }
        assert all(p.startswith(("/health", "/metrics")) for p in open_paths), open_paths
        for method, spec_path, scope in operations:
            path = spec_path.replace("{agent}", "support")
            for headers in ({}, {"Authorization": "Bearer wrong-key-000000000000000000"}):
                response = anonymous.request(method, path, json={}, headers=headers)
                assert response.status_code == 401, (method, path, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert _error(response)["type"] == "AuthenticationError"
            reader = {"Authorization": f"Bearer {api_key_for('reader')}"}
            response = anonymous.request(method, path, json={}, headers=reader)
            if scope == "query":
                assert response.status_code != 403, (method, path)
            else:
                assert response.status_code == 403, (method, path, response.text)
                assert _error(response)["type"] == "PermissionDeniedError"
    assert api_key_for("reader") not in server.log_text()
    assert "key=reader" in server.log_text()


def test_a_10_mb_body_is_refused_unread_and_memory_stays_flat(
    server: ServerProcess, client: httpx.Client
) -> None:
    client.post("/v1/ask", json={"question": "How do I rotate an API key?"})
    before = server.rss_bytes()
    huge = b'{"question": "' + b"x" * (10 * MB) + b'"}'
    for path in ("/v1/ask", "/v1/chat/completions", "/v1/agents/code_review/run"):
        response = client.post(path, content=huge, headers={"content-type": "application/json"})
        assert response.status_code == 413, (path, response.text[:200])
        error = _error(response)
        assert error["type"] == "RequestTooLargeError"
        assert "xxxx" not in response.text
    assert server.rss_bytes() - before < 50 * MB
    # Still serving.
    assert client.get("/health").json() == {"status": "ok"}


def test_a_chunked_body_over_the_limit_is_refused(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"question": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}'

    response = client.post(
        "/v1/ask", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "yyyy" not in response.text


def test_validation_errors_use_the_error_format_and_never_echo_input(
    client: httpx.Client,
) -> None:
    long_question = "z" * 9000
    response = client.post("/v1/ask", json={"question": long_question})
    assert response.status_code == 422
    error = _error(response)
    assert error["type"] == "ValidationError"
    assert "question" in error["message"]
    assert "zzzz" not in response.text
    assert len(response.text) < 1000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/ask", {"question": "   \n\t "}),
        ("/v1/agents/support/query", {"question": "  "}),
        ("/v1/route", {"text": "\n"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "   "}]}),
        ("/v1/ask", {"question": "hi", "agentt": "support"}),
        ("/v1/ask", {"question": "hi", "top_k": 0}),
        ("/v1/chat/completions", {"messages": []}),
        # An option Genesis cannot honour is refused, never silently ignored.
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 3}),
        ("/v1/ask", {"question": "hi", "session_id": "../../etc"}),
    ],
)
def test_blank_or_malformed_input_is_a_422(
    client: httpx.Client, path: str, body: dict[str, object]
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    _error(response)


def test_malformed_json_and_unknown_routes_use_the_error_format(client: httpx.Client) -> None:
    bad = client.post("/v1/ask", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422
    _error(bad)
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert _error(missing)["type"] == "NotFound"
    unknown = client.post("/v1/agents/nobody/query", json={"question": "hi"})
    assert unknown.status_code == 404
    assert "nobody" in _error(unknown)["message"]


@pytest.mark.parametrize("agent", ["se_darwin", "qa"])
def test_code_running_agents_are_disabled_over_http_by_default(
    client: httpx.Client, agent: str
) -> None:
    response = client.post(
        f"/v1/agents/{agent}/run",
        json={"input": "def f():\n    return 1\n", "tests": "def test_f():\n    assert True\n"},
    )
    assert response.status_code == 403, response.text
    error = _error(response)
    assert error["type"] == "FeatureDisabledError"
    assert "allow_code_execution" in error["message"]


# -- the in-flight bound, on a tiny app whose requests we can hold open ----------------------


@pytest.fixture
def held_app() -> Iterator[tuple[str, threading.Event, list[int]]]:
    release = threading.Event()
    entered: list[int] = []

    async def slow(request: Request) -> JSONResponse:
        entered.append(1)
        await asyncio.to_thread(release.wait, 30)
        return JSONResponse({"ok": True})

    async def probe(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    inner = Starlette(routes=[Route("/v1/slow", slow), Route("/health", probe)])
    app = BodyLimitMiddleware(InFlightLimitMiddleware(inner, 2, retry_after_s=3), 1024)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", release, entered
    finally:
        release.set()
        server.should_exit = True
        thread.join(timeout=10)


async def test_past_the_in_flight_bound_a_503_with_retry_after(
    held_app: tuple[str, threading.Event, list[int]],
) -> None:
    url, release, entered = held_app
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        held = [asyncio.create_task(http.get("/v1/slow")) for _ in range(2)]
        for _ in range(3000):  # the server runs in another thread: poll its counter
            if len(entered) >= 2:
                break
            await asyncio.sleep(0.01)
        refused = await http.get("/v1/slow")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "3"
        assert refused.json()["error"]["type"] == "OverloadedError"
        # Probes are outside the bound.
        assert (await http.get("/health")).status_code == 200
        release.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        assert (await http.get("/v1/slow")).status_code == 200


def test_a_question_over_the_agents_token_budget_is_refused_before_embedding(
    client: httpx.Client,
) -> None:
    question = "qzx " * 1900  # under the character bound, far over half the token budget
    response = client.post("/v1/agents/support/query", json={"question": question})
    assert response.status_code == 422, response.text
    error = _error(response)
    assert error["type"] == "PromptBudgetError"
    assert "tokens" in error["message"]
    assert "qzx qzx" not in response.text


async def _call(app: object, client: tuple[str, int]) -> list[tuple[bytes, bytes]]:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": client}
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[operator]
    return list(sent[0]["headers"])  # type: ignore[call-overload]


async def test_a_keep_alive_connection_is_closed_after_its_request_budget() -> None:
    from starlette.responses import PlainTextResponse

    from genesis.server._limits import KeepAliveRecycleMiddleware

    inner = PlainTextResponse("ok", headers={"connection": "keep-alive"})
    app = KeepAliveRecycleMiddleware(inner, max_requests=3)
    one, other = ("127.0.0.1", 50001), ("127.0.0.1", 50002)
    closes = [(b"connection", b"close") in await _call(app, one) for _ in range(3)]
    assert closes == [False, False, True]
    # One connection header only: the app's keep-alive is replaced, not contradicted.
    last = await _call(app, one)
    assert (b"connection", b"close") not in last  # a new connection on the same port counts anew
    assert [(b"connection", b"close") in await _call(app, other) for _ in range(2)] == [False] * 2
    headers = [h for _ in range(2) for h in await _call(app, one)]
    assert [v for k, v in headers if k == b"connection"] == [b"keep-alive", b"close"]
