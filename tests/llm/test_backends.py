"""Completions and chat backends against the real fake server, and vendor-error mapping."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from genesis.errors import (
    ConfigError,
    LLMBadRequestError,
    LLMError,
    LLMRateLimitError,
    LLMServerError,
    LLMTimeoutError,
)
from genesis.llm import (
    ChatBackend,
    CompletionsBackend,
    ExtractiveBackend,
    GenerationRequest,
    LLMBackend,
    Message,
    build_backend,
)
from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.tokens import HFTokenizer

KEY = "sk-test-very-secret-123"


@pytest.fixture(scope="module")
def gpt2(tokenizers_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizers_dir / "gpt2")


@pytest.fixture(scope="module")
def running_server(gpt2: HFTokenizer) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(
        gpt2, ["base"], replies={"base": "The answer is 42."}, timeout_sleep_s=3.0
    ) as srv:
        yield srv


@pytest.fixture
def server(running_server: FakeOpenAIServer) -> FakeOpenAIServer:
    running_server.reset()
    return running_server


def _request(
    gpt2: HFTokenizer, text: str = "Hello there, model.", **kw: object
) -> GenerationRequest:
    ids = gpt2.encode_batch_sync([text])[0]
    return GenerationRequest(
        model="base",
        query=text,
        messages=[Message("system", "Be brief."), Message("user", text)],
        prompt_ids=ids,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.integration
async def test_completions_sends_token_ids_and_reads_usage(
    server: FakeOpenAIServer, gpt2: HFTokenizer
) -> None:
    request = _request(gpt2)
    async with CompletionsBackend(server.base_url) as backend:
        generation = await backend.generate(request)
    [call] = server.calls("base", "completions")
    assert request.prompt_ids is not None
    assert call["prompt_ids"] == request.prompt_ids.tolist()
    assert call["prompt"] == "Hello there, model."
    assert generation.text == "The answer is 42."
    reply_ids = gpt2.encode_batch_sync(["The answer is 42."])[0].tolist()
    assert generation.completion_ids == reply_ids
    assert generation.usage.prompt_tokens == len(request.prompt_ids)
    assert generation.usage.completion_tokens == len(reply_ids)
    assert generation.model == "base" and not generation.extractive


@pytest.mark.integration
async def test_completions_honours_max_tokens(server: FakeOpenAIServer, gpt2: HFTokenizer) -> None:
    async with CompletionsBackend(server.base_url + "/v1/") as backend:
        generation = await backend.generate(_request(gpt2, max_tokens=2))
    assert generation.finish_reason == "length"
    assert generation.usage.completion_tokens == 2


@pytest.mark.integration
async def test_completions_refuses_a_request_without_prompt_ids(
    server: FakeOpenAIServer, gpt2: HFTokenizer
) -> None:
    request = _request(gpt2)
    request.prompt_ids = None
    async with CompletionsBackend(server.base_url) as backend:
        with pytest.raises(LLMBadRequestError, match="prompt_ids"):
            await backend.generate(request)
    assert server.received == []


@pytest.mark.integration
async def test_chat_sends_text_messages(server: FakeOpenAIServer, gpt2: HFTokenizer) -> None:
    async with ChatBackend(server.base_url) as backend:
        generation = await backend.generate(_request(gpt2))
    [call] = server.calls("base", "chat")
    assert call["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there, model."},
    ]
    assert generation.text == "The answer is 42."
    assert generation.usage.prompt_tokens > 0 and generation.usage.completion_tokens > 0


@pytest.mark.integration
async def test_api_key_is_sent_as_bearer_and_never_shown(gpt2: HFTokenizer) -> None:
    with FakeOpenAIServer(gpt2, ["base"], api_key=KEY) as srv:
        async with CompletionsBackend(srv.base_url, api_key=KEY) as good:
            assert (await good.generate(_request(gpt2))).text
        async with CompletionsBackend(srv.base_url, api_key="wrong-key") as bad:
            with pytest.raises(LLMBadRequestError, match="401") as info:
                await bad.generate(_request(gpt2))
            assert "wrong-key" not in str(info.value) and "wrong-key" not in repr(bad)
        assert KEY not in repr(good)


@pytest.mark.integration
@pytest.mark.parametrize("backend_cls", [CompletionsBackend, ChatBackend])
@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        (500, LLMServerError),
        (503, LLMServerError),
        (429, LLMRateLimitError),
        (400, LLMBadRequestError),
        (422, LLMBadRequestError),
        ("garbage", LLMServerError),
        ("timeout", LLMTimeoutError),
    ],
)
async def test_server_failures_are_translated(
    server: FakeOpenAIServer,
    gpt2: HFTokenizer,
    backend_cls: type[CompletionsBackend | ChatBackend],
    outcome: int | str,
    error: type[LLMError],
) -> None:
    server.script("base", [outcome])
    # Only the timeout case needs a short deadline; the others answer at once, and a short
    # one turned a 429 into a timeout on a busy machine.
    timeout_s = 0.3 if outcome == "timeout" else 30.0
    async with backend_cls(server.base_url) as backend:
        with pytest.raises(error):
            await backend.generate(_request(gpt2, timeout_s=timeout_s))


@pytest.mark.integration
async def test_unknown_model_is_a_bad_request(
    server: FakeOpenAIServer, gpt2: HFTokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    request = _request(gpt2)
    request.model = "nope"
    async with CompletionsBackend(server.base_url) as backend:
        with pytest.raises(LLMBadRequestError, match="upstream returned 404") as info:
            await backend.generate(request)
    assert "does not exist" not in str(info.value)  # the upstream's words: logged only
    assert "does not exist" in caplog.text


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.integration
async def test_connection_refused_is_a_server_error(gpt2: HFTokenizer) -> None:
    async with CompletionsBackend(f"http://127.0.0.1:{_closed_port()}") as backend:
        with pytest.raises(LLMServerError, match="transport error"):
            await backend.generate(_request(gpt2))


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ReadTimeout("slow"), LLMTimeoutError),
        (httpx.ConnectTimeout("slow"), LLMTimeoutError),
        (httpx.PoolTimeout("busy"), LLMTimeoutError),
        (httpx.ConnectError("refused"), LLMServerError),
        (httpx.RemoteProtocolError("reset"), LLMServerError),
        (httpx.ReadError("broken"), LLMServerError),
    ],
)
async def test_every_httpx_error_is_translated(
    gpt2: HFTokenizer, exc: httpx.HTTPError, error: type[LLMError]
) -> None:
    def raise_(request: httpx.Request) -> httpx.Response:
        raise exc

    async with httpx.AsyncClient(transport=httpx.MockTransport(raise_)) as client:
        backend = CompletionsBackend("http://llm.invalid", client=client)
        with pytest.raises(error) as info:
            await backend.generate(_request(gpt2))
    assert info.value.__cause__ is exc


async def test_a_response_without_choices_is_a_server_error(gpt2: HFTokenizer) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"id": "x"}))
    async with httpx.AsyncClient(transport=transport) as client:
        backend = CompletionsBackend("http://llm.invalid", client=client)
        with pytest.raises(LLMServerError, match="no choices"):
            await backend.generate(_request(gpt2))


async def test_an_injected_client_is_not_closed_by_the_backend() -> None:
    async with httpx.AsyncClient() as client:
        await CompletionsBackend("http://llm.invalid", client=client).aclose()
        assert not client.is_closed


def test_build_backend_picks_by_name_and_names_missing_settings() -> None:
    assert isinstance(build_backend("extractive"), ExtractiveBackend)
    assert isinstance(build_backend("chat", base_url="http://x:1"), LLMBackend)
    with pytest.raises(ConfigError, match="base_url"):
        build_backend("completions")
    with pytest.raises(ConfigError, match="unknown backend"):
        build_backend("gpt")
    with pytest.raises(ConfigError, match="http"):
        CompletionsBackend("localhost:8000")


def test_prompt_ids_travel_as_plain_ints(gpt2: HFTokenizer) -> None:
    from genesis.llm._openai import completions_payload

    request = _request(gpt2)
    request.prompt_ids = np.asarray([1, 2, 70000], dtype=np.uint32)
    payload = completions_payload(request)
    assert payload["prompt"] == [1, 2, 70000] and type(payload["prompt"][0]) is int
    assert payload["return_token_ids"] is True


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            200,
            {"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": None}},
            LLMServerError,
        ),
        (408, {"error": "slow"}, LLMTimeoutError),
    ],
)
async def test_malformed_usage_and_408_are_translated(
    gpt2: HFTokenizer, status: int, body: dict[str, object], error: type[Exception]
) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    async with httpx.AsyncClient(transport=transport) as client:
        backend = ChatBackend("http://llm.invalid", client=client)
        with pytest.raises(error):
            await backend.generate(_request(gpt2))


def test_a_password_in_the_base_url_never_shows() -> None:
    backend = ChatBackend("https://user:s3cr3t@llm.example/v1")
    assert "s3cr3t" not in repr(backend)
