"""A prompt assembled in token space reaches the server as exactly the intended text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from genesis.errors import LLMBadRequestError
from genesis.llm import CompletionsBackend, GenerationRequest, Message
from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.tokens import HFTokenizer, TokenIds

SYSTEM = "You answer questions about the documentation. Cite sources as [n].\n\n"
CONTEXT = "[1] Path parameters are declared with the same syntax as Python format strings.\n\n"
QUERY = "Question: how do I declare a path parameter?\nAnswer:"
PROMPT = SYSTEM + CONTEXT + QUERY


@pytest.fixture(scope="module")
def mistral(tokenizers_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizers_dir / "mistral-7b-v0.1")


@pytest.fixture
def server(mistral: HFTokenizer) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(mistral, ["mistral"], expect_prompt=PROMPT) as srv:
        yield srv


def _request(ids: TokenIds) -> GenerationRequest:
    return GenerationRequest("mistral", QUERY, [Message("user", PROMPT)], prompt_ids=ids)


@pytest.mark.integration
async def test_the_server_decodes_exactly_the_assembled_prompt(
    server: FakeOpenAIServer, mistral: HFTokenizer
) -> None:
    ids = mistral.encode_batch_sync([PROMPT])[0]
    async with CompletionsBackend(server.base_url) as backend:
        generation = await backend.generate(_request(ids))
    [call] = server.calls("mistral", "completions")
    assert call["prompt"] == PROMPT
    assert call["prompt_ids"] == ids.tolist()
    assert generation.usage.prompt_tokens == len(ids)


@pytest.mark.integration
async def test_one_changed_id_is_refused_with_the_diff(
    server: FakeOpenAIServer, mistral: HFTokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    ids = mistral.encode_batch_sync([PROMPT])[0].copy()
    position = len(mistral.encode_batch_sync([SYSTEM])[0]) + 3
    replacement = mistral.encode_batch_sync(["banana"])[0][-1]
    assert ids[position] != replacement
    ids[position] = replacement
    async with CompletionsBackend(server.base_url) as backend:
        with pytest.raises(LLMBadRequestError, match="400") as info:
            await backend.generate(_request(ids))
    # The upstream's body goes to the operator's log, never into the client-facing error.
    assert "decoded prompt differs" not in str(info.value)
    logged = caplog.text
    assert "decoded prompt differs" in logged
    assert mistral.decode_sync([replacement]).strip() in logged  # the diff shows the change
