"""Streaming: both backends' ``stream()`` against the real fake server (which streams as vLLM
does), the errors they map, and the registry's fallback window (before the first piece)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from genesis.errors import (
    AllModelsFailedError,
    LLMBadRequestError,
    LLMRateLimitError,
    LLMServerError,
)
from genesis.llm import (
    ChatBackend,
    CompletionsBackend,
    GenerationRequest,
    Message,
    ModelRegistry,
    ModelRoute,
    StreamDelta,
    StreamingBackend,
)
from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.tokens import HFTokenizer

REPLY = "The answer is forty two, as always."


@pytest.fixture(scope="module")
def gpt2(tokenizers_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizers_dir / "gpt2")


@pytest.fixture(scope="module")
def running_server(gpt2: HFTokenizer) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(gpt2, ["ft", "base"], replies={"ft": REPLY}) as srv:
        yield srv


@pytest.fixture
def server(running_server: FakeOpenAIServer) -> FakeOpenAIServer:
    running_server.reset()
    return running_server


def _request(gpt2: HFTokenizer, model: str = "ft") -> GenerationRequest:
    return GenerationRequest(
        model=model,
        query="q",
        messages=[Message("user", "What is the answer?")],
        prompt_ids=gpt2.encode_batch_sync(["What is the answer?"])[0],
        max_tokens=64,
        stop=["\n\n"],
        timeout_s=5.0,
    )


async def _collect(stream: AsyncIterator[StreamDelta]) -> list[StreamDelta]:
    return [delta async for delta in stream]


@pytest.mark.parametrize("backend_class", [CompletionsBackend, ChatBackend])
async def test_a_backend_streams_piece_by_piece_then_finishes_with_usage(
    server: FakeOpenAIServer, gpt2: HFTokenizer, backend_class: type[CompletionsBackend]
) -> None:
    async with backend_class(server.base_url) as backend:
        assert isinstance(backend, StreamingBackend)
        deltas = await _collect(backend.stream(_request(gpt2)))
    texts = [d.text for d in deltas if d.text]
    assert len(texts) >= 5 and "".join(texts) == REPLY
    last = deltas[-1]
    assert (last.text, last.finish_reason) == ("", "stop")
    assert last.usage is not None
    assert last.usage.completion_tokens == len(gpt2.encode_batch_sync([REPLY])[0])
    [call] = server.calls("ft")
    assert call["stream"] is True and call["stream_options"] == {"include_usage": True}
    assert call["stop"] == ["\n\n"]


@pytest.mark.parametrize(
    ("outcome", "error"),
    [(429, LLMRateLimitError), (500, LLMServerError), (404, LLMBadRequestError)],
)
async def test_a_bad_status_before_the_stream_maps_like_generate(
    server: FakeOpenAIServer, gpt2: HFTokenizer, outcome: int, error: type[Exception]
) -> None:
    server.script("ft", [outcome])
    async with CompletionsBackend(server.base_url) as backend:
        with pytest.raises(error):
            await _collect(backend.stream(_request(gpt2)))


async def test_an_error_event_mid_stream_is_a_server_error_after_the_first_piece(
    server: FakeOpenAIServer, gpt2: HFTokenizer
) -> None:
    server.script("ft", ["break"])
    seen: list[str] = []
    async with CompletionsBackend(server.base_url) as backend:
        with pytest.raises(LLMServerError, match="mid-stream"):
            async for delta in backend.stream(_request(gpt2)):
                seen.append(delta.text)
    assert seen == ["The "]


def _registry(server: FakeOpenAIServer) -> ModelRegistry:
    return ModelRegistry(
        {"support": ModelRoute("ft", "base")},
        CompletionsBackend(server.base_url),
        total_budget_s=5.0,
        attempt_timeout_s=1.0,
        max_retries=1,
        backoff_base_s=0.01,
        backoff_jitter_s=0.0,
        breaker_failures=10,
    )


async def test_the_registry_falls_back_only_before_the_first_piece(
    server: FakeOpenAIServer, gpt2: HFTokenizer
) -> None:
    registry = _registry(server)
    server.script("ft", [500, 500])
    opened = await registry.open_stream("support", _request(gpt2))
    assert (opened.model, opened.fell_back) == ("base", True)
    text = opened.first.text + "".join([d.text async for d in opened.rest()])
    assert text == "Reply from base."
    # Once a piece is out, a failure is the stream's own: no other model is called.
    server.reset()
    server.script("ft", ["break"])
    opened = await registry.open_stream("support", _request(gpt2))
    assert opened.model == "ft" and opened.first.text == "The "
    with pytest.raises(LLMServerError):
        await _collect(opened.rest())
    assert server.calls("base") == []
    await registry.aclose()


async def test_the_registry_names_every_model_when_none_starts_a_stream(
    server: FakeOpenAIServer, gpt2: HFTokenizer
) -> None:
    registry = _registry(server)
    server.script("ft", [500, 500])
    server.script("base", [503, 503])
    with pytest.raises(AllModelsFailedError, match="ft.*base"):
        await registry.open_stream("support", _request(gpt2))
    await registry.aclose()
