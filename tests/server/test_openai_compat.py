"""Drop-in OpenAI compatibility through `genesis serve` as a user runs it: the openai SDK
(sync and async), LangChain's ChatOpenAI and LlamaIndex's OpenAILike, unchanged, against a
Genesis whose LLM is a fake vLLM that streams and checks what it receives."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.testing.server_process import (
    ServerProcess,
    api_key_for,
    config_with_keys,
    serve,
)
from genesis.tokens import HFTokenizer

pytestmark = [pytest.mark.slow, pytest.mark.integration]

FINETUNED = "ft:open-mistral-7b:genesis:support-v3"
BASELINE = "open-mistral-7b"
REPLY = "To rotate a key, create a new key, deploy it, then revoke the old one."
# A support problem (the intent router sends plain how-to questions to documentation).
QUESTION = "My API key rotation broke our integration. How do I rotate an API key safely?"


@dataclass(frozen=True, slots=True)
class _Stack:
    genesis: ServerProcess
    llm: FakeOpenAIServer

    @property
    def v1(self) -> str:
        return self.genesis.url + "/v1"


@pytest.fixture(scope="module")
def stack(
    demo_home: Path, tokenizers_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Stack]:
    served = HFTokenizer.from_file(tokenizers_dir / "mistral-7b-v0.1")
    config = config_with_keys(tmp_path_factory.mktemp("config"), {"app": ["query"]})
    with FakeOpenAIServer(served, [FINETUNED, BASELINE], replies={FINETUNED: REPLY}) as llm:
        settings = [
            "llm.backend=completions",
            f"llm.base_url={llm.base_url}",
            "tokenizer.kind=hf",
            f"tokenizer.path={tokenizers_dir / 'mistral-7b-v0.1'}",
            "llm.attempt_timeout_s=3",
            "llm.timeout_s=10",
            # Tests script failures of the fine-tuned model: its breaker must not open.
            "llm.breaker_failures=100",
        ]
        args = ["--config-dir", str(config)]
        with serve(demo_home, *settings, global_args=args) as server:
            yield _Stack(server, llm)


@pytest.fixture
def client(stack: _Stack) -> openai.OpenAI:
    stack.llm.reset()
    return openai.OpenAI(base_url=stack.v1, api_key=api_key_for("app"), max_retries=0)


def test_the_sdk_streams_the_answer_chunk_by_chunk(client: openai.OpenAI, stack: _Stack) -> None:
    stream = client.chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) >= 2
    assert "".join(texts) == REPLY
    assert chunks[0].choices[0].delta.role == "assistant"
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    [call] = stack.llm.calls(FINETUNED, "completions")
    assert call["stream"] is True
    assert usage.prompt_tokens == len(call["prompt_ids"])
    assert usage.completion_tokens == len(stack.llm.tokenizer.encode_batch_sync([REPLY])[0])
    assert QUESTION in call["prompt"]


async def test_the_async_sdk_streams_too(stack: _Stack) -> None:
    stack.llm.reset()
    client = openai.AsyncOpenAI(base_url=stack.v1, api_key=api_key_for("app"), max_retries=0)
    async with client:
        stream = await client.chat.completions.create(
            model="genesis", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        texts = [c.choices[0].delta.content async for c in stream if c.choices]
    assert "".join(t for t in texts if t) == REPLY
    assert len([t for t in texts if t]) >= 2


def test_the_sdk_lists_and_retrieves_the_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "genesis"
    assert {"support", "documentation", "code_review"} <= set(ids)
    assert client.models.retrieve("support").id == "support"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_text_parts_and_generation_options_reach_the_model(
    client: openai.OpenAI, stack: _Stack
) -> None:
    completion = client.chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}]}],
        max_tokens=5,
        temperature=0.0,
        stop=["\n\n"],
        n=1,
    )
    assert completion.choices[0].message.content
    [call] = stack.llm.calls(FINETUNED, "completions")
    assert (call["max_tokens"], call["temperature"], call["stop"]) == (5, 0.0, ["\n\n"])
    assert completion.usage is not None and completion.usage.completion_tokens == 5


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"top_p": 0.5}, "top_p"),
        ({"max_tokens": 60_000}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
    ],
)
def test_unsupported_options_are_refused_naming_the_field(
    client: openai.OpenAI, extra: dict[str, object], named: str
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.chat.completions.create(
            model="support",
            messages=[{"role": "user", "content": QUESTION}],
            **extra,  # type: ignore[arg-type]
        )
    assert named in str(info.value)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "x"},
                ]
            },
            "after the last user message",
        ),
        ({"messages": [{"role": "user", "content": "hi"}], "user": "a b"}, "user"),
        ({"messages": [{"role": "user", "content": "hi"}], "seeed": 1}, "seeed"),
        (
            {"messages": [{"role": "tool", "content": "42"}, {"role": "user", "content": "hi"}]},
            "role",
        ),
    ],
)
def test_malformed_conversations_are_refused_naming_the_problem(
    stack: _Stack, body: dict[str, object], named: str
) -> None:
    headers = {"Authorization": f"Bearer {api_key_for('app')}"}
    response = httpx.post(f"{stack.v1}/chat/completions", json=body, headers=headers, timeout=60)
    assert response.status_code == 422, response.text
    assert named in response.json()["error"]["message"]


def test_an_image_part_is_refused_clearly(client: openai.OpenAI) -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    with pytest.raises(openai.UnprocessableEntityError, match="image_url"):
        client.chat.completions.create(
            model="support",
            messages=[{"role": "user", "content": [image]}],  # type: ignore[list-item]
        )


def test_earlier_turns_enter_the_prompt_after_the_chunks(
    client: openai.OpenAI, stack: _Stack
) -> None:
    earlier = "My key is called billing-sync and it belongs to the finance team."
    client.chat.completions.create(
        model="support",
        messages=[
            {"role": "system", "content": "Answer in one sentence."},
            {"role": "user", "content": earlier},
            {"role": "assistant", "content": "Noted: billing-sync, finance team."},
            {"role": "user", "content": QUESTION},
        ],
    )
    [call] = stack.llm.calls(FINETUNED, "completions")
    prompt = call["prompt"]
    history = prompt.index("Conversation so far:")
    assert prompt.index("[1]") < history < prompt.index(f"Question: {QUESTION}")
    assert f"User: {earlier}" in prompt
    assert "System: Answer in one sentence." in prompt
    # Token space, no drift: what was sent is exactly the tokenizer's encoding of its text.
    assert call["prompt_ids"] == stack.llm.tokenizer.encode_batch_sync([prompt])[0].tolist()


def test_the_baseline_takes_over_before_the_first_token(
    client: openai.OpenAI, stack: _Stack
) -> None:
    stack.llm.script(FINETUNED, [500, 500, 500])
    stream = client.chat.completions.create(
        model="support", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == f"Reply from {BASELINE}."


def test_an_error_after_the_first_token_is_an_sse_error_event(
    client: openai.OpenAI, stack: _Stack
) -> None:
    stack.llm.script(FINETUNED, ["break"])
    stream = client.chat.completions.create(
        model="support", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    seen: list[str] = []
    with pytest.raises(openai.APIError, match="mid-stream"):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == REPLY.split(" ")[0] + " "
    # No other model answered once text had been sent.
    assert stack.llm.calls(BASELINE) == []


def test_the_raw_stream_is_openais_wire_format(stack: _Stack) -> None:
    stack.llm.reset()
    headers = {"Authorization": f"Bearer {api_key_for('app')}"}
    body = {
        "model": "support",
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{stack.v1}/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert '"object":"chat.completion.chunk"' in events[0]


def _langchain(stack: _Stack) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(  # type: ignore[call-arg]
        model="support", base_url=stack.v1, api_key=api_key_for("app"), max_retries=0
    )


def test_langchain_chat_openai_invoke_and_stream(stack: _Stack) -> None:
    stack.llm.reset()
    llm = _langchain(stack)
    assert llm.invoke(QUESTION).content == REPLY
    pieces = [chunk.content for chunk in llm.stream(QUESTION)]
    assert "".join(str(p) for p in pieces) == REPLY
    assert len([p for p in pieces if p]) >= 2


async def test_langchain_chat_openai_ainvoke(stack: _Stack) -> None:
    stack.llm.reset()
    llm = _langchain(stack)
    try:
        assert (await llm.ainvoke(QUESTION)).content == REPLY
    finally:
        await llm.root_async_client.close()


def test_llamaindex_openai_like_chat_and_stream_chat(stack: _Stack) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    stack.llm.reset()
    llm = OpenAILike(
        model="support",
        api_base=stack.v1,
        api_key=api_key_for("app"),
        is_chat_model=True,
        max_retries=0,
    )
    messages = [ChatMessage(role="user", content=QUESTION)]
    assert llm.chat(messages).message.content == REPLY
    deltas = [r.delta for r in llm.stream_chat(messages)]
    assert "".join(d or "" for d in deltas) == REPLY
    assert len([d for d in deltas if d]) >= 2
