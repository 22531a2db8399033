"""The completions call on aiohttp (a backend's own client): errors, credentials, loops."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from genesis._http import env_proxy, is_connect_error, without_userinfo
from genesis.errors import LLMServerError
from genesis.llm import CompletionsBackend, GenerationRequest
from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.tokens import HFTokenizer


@pytest.fixture(scope="module")
def gpt2(tokenizers_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizers_dir / "gpt2")


def _request(gpt2: HFTokenizer) -> GenerationRequest:
    return GenerationRequest(
        model="base", query="q", messages=[], prompt_ids=gpt2.encode_batch_sync(["Hi."])[0]
    )


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("url", "headers", "bare", "auth"),
    [
        ("http://h:8000", {}, "http://h:8000", None),
        ("http://u:p%40ss@h:8000", {}, "http://h:8000", _basic("u", "p@ss")),
        ("https://u:pw@h/v1", {}, "https://h/v1", _basic("u", "pw")),
        ("http://u:pw@[::1]:9000", {}, "http://[::1]:9000", _basic("u", "pw")),
        # an API key is sent as it is; the URL's credentials are dropped, never both
        ("http://u:pw@h:8000", {"Authorization": "Bearer k"}, "http://h:8000", "Bearer k"),
    ],
)
def test_url_credentials_become_basic_auth_unless_a_key_is_sent(
    url: str, headers: dict[str, str], bare: str, auth: str | None
) -> None:
    out_url, out_headers = without_userinfo(url, headers)
    assert out_url == bare
    assert out_headers.get("Authorization") == auth
    assert "pw" not in out_url and "p%40ss" not in out_url


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_connection_is_a_connect_error_for_the_replica_breaker(
    gpt2: HFTokenizer,
) -> None:
    async with CompletionsBackend(f"http://127.0.0.1:{_closed_port()}") as backend:
        with pytest.raises(LLMServerError, match="transport error") as info:
            await backend.generate(_request(gpt2))
    assert is_connect_error(info.value.__cause__)


class HangsUp:
    """A server that reads each request and closes the connection without answering."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.requests = 0


@pytest.fixture
def hangs_up() -> Iterator[HangsUp]:
    listener = socket.create_server(("127.0.0.1", 0))
    server = HangsUp(f"http://127.0.0.1:{listener.getsockname()[1]}")
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                if conn.recv(65536):
                    server.requests += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server
    stop.set()
    thread.join()
    listener.close()


async def test_a_server_that_hangs_up_is_asked_once_more_then_a_server_error(
    gpt2: HFTokenizer, hangs_up: HangsUp
) -> None:
    async with CompletionsBackend(hangs_up.url) as backend:
        with pytest.raises(LLMServerError, match="transport error") as info:
            await backend.generate(_request(gpt2))
    assert not is_connect_error(info.value.__cause__)
    assert hangs_up.requests == 2  # a second try on a new connection, no more


def test_one_backend_serves_one_loop_after_another(gpt2: HFTokenizer) -> None:
    """A sync caller runs each call in a fresh loop and closes the backend's clients before
    that loop ends; the backend makes new ones in the next loop."""

    async def once(backend: CompletionsBackend) -> str:
        try:
            return (await backend.generate(_request(gpt2))).text
        finally:
            await backend.aclose()

    with FakeOpenAIServer(gpt2, ["base"], replies={"base": "ok"}) as srv:
        backend = CompletionsBackend(srv.base_url)
        answers = [asyncio.run(once(backend)), asyncio.run(once(backend))]
    assert answers == ["ok", "ok"]
    assert len(srv.calls(endpoint="completions")) == 2


@pytest.mark.parametrize(
    ("env", "url", "proxy"),
    [
        ({}, "http://llm:8000", None),
        ({"HTTP_PROXY": "http://proxy:3128"}, "http://llm:8000", "http://proxy:3128"),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "http://llm:8000", None),
        ({"ALL_PROXY": "http://proxy:3128"}, "https://llm", "http://proxy:3128"),
        ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "llm"}, "http://llm:8000", None),
    ],
)
def test_the_proxy_comes_from_the_environment_once(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, proxy: str | None
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        for spelling in (name, name.lower()):
            monkeypatch.delenv(spelling, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert env_proxy(url) == proxy
