"""Model registry: retries, fallback, breaker and time budget, against the real fake server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from genesis.errors import (
    AllModelsFailedError,
    LLMServerError,
    LLMTimeoutError,
    UnknownAgentError,
)
from genesis.llm import (
    ChatBackend,
    CompletionsBackend,
    Generation,
    GenerationRequest,
    Message,
    ModelRegistry,
    ModelRoute,
    Usage,
)
from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.tokens import HFTokenizer

ROUTES = {"support": ModelRoute("ft-support", "base"), "docs": ModelRoute(None, "base")}
QUESTION = [Message("system", "You help."), Message("user", "Where is my order?")]


@pytest.fixture(scope="module")
def gpt2(tokenizers_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizers_dir / "gpt2")


@pytest.fixture(scope="module")
def running_server(gpt2: HFTokenizer) -> Iterator[FakeOpenAIServer]:
    replies = {"ft-support": "Fine-tuned says hi.", "base": "Baseline says hi."}
    with FakeOpenAIServer(gpt2, ["ft-support", "base"], replies=replies) as srv:
        yield srv


@pytest.fixture
def server(running_server: FakeOpenAIServer) -> FakeOpenAIServer:
    running_server.reset()
    running_server.timeout_sleep_s = 3.0
    return running_server


@pytest.fixture
async def registries() -> AsyncIterator[list[ModelRegistry]]:
    made: list[ModelRegistry] = []
    yield made
    for registry in made:
        await registry.aclose()


def _registry(server: FakeOpenAIServer, **kw: Any) -> tuple[ModelRegistry, list[tuple[str, ...]]]:
    hooks: list[tuple[str, ...]] = []
    options: dict[str, Any] = {
        "total_budget_s": 5.0,
        "attempt_timeout_s": 0.3,
        "max_retries": 2,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.02,
        "backoff_jitter_s": 0.0,
        "breaker_failures": 10,
        "on_fallback": lambda *args: hooks.append(args),
    }
    options.update(kw)
    return ModelRegistry(ROUTES, ChatBackend(server.base_url), **options), hooks


@pytest.mark.integration
async def test_finetuned_model_serves_when_healthy(server: FakeOpenAIServer) -> None:
    registry, hooks = _registry(server)
    result = await registry.chat_async("support", QUESTION)
    assert (result.model, result.fell_back, result.attempts) == ("ft-support", False, 1)
    assert result.generation.text == "Fine-tuned says hi."
    assert hooks == [] and registry.fallback_counts == {}
    await registry.aclose()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (500, "server_error"),
        pytest.param("timeout", "timeout", marks=pytest.mark.slow),
        (429, "rate_limited"),
    ],
)
async def test_failing_finetuned_model_falls_back_to_baseline(
    server: FakeOpenAIServer, outcome: int | str, reason: str
) -> None:
    server.script("ft-support", [outcome] * 3)
    registry, hooks = _registry(server)
    result = await registry.chat_async("support", QUESTION)
    assert result.model == "base" and result.fell_back
    assert result.generation.text == "Baseline says hi."
    assert len(server.calls("ft-support")) == 3  # 1 try + 2 retries
    assert result.attempts == 4
    assert registry.fallback_counts == {("support", reason): 1}
    assert hooks == [("support", "ft-support", "base", reason)]
    assert result.reasons and result.reasons[0].startswith(f"ft-support: {reason}")
    await registry.aclose()


@pytest.mark.integration
async def test_a_retry_can_rescue_the_finetuned_model(server: FakeOpenAIServer) -> None:
    server.script("ft-support", [503, "ok"])
    registry, _ = _registry(server)
    result = await registry.chat_async("support", QUESTION)
    assert (result.model, result.fell_back, result.attempts) == ("ft-support", False, 2)
    await registry.aclose()


@pytest.mark.integration
async def test_bad_request_is_not_retried_but_falls_back(server: FakeOpenAIServer) -> None:
    server.script("ft-support", [400])
    registry, _ = _registry(server)
    result = await registry.chat_async("support", QUESTION)
    assert result.model == "base"
    assert len(server.calls("ft-support")) == 1
    assert registry.fallback_counts == {("support", "bad_request"): 1}
    await registry.aclose()


@pytest.mark.integration
async def test_open_breaker_sends_calls_straight_to_the_baseline(server: FakeOpenAIServer) -> None:
    server.script("ft-support", [500, 500, 500, 500])
    registry, _ = _registry(server, max_retries=0, breaker_failures=2, breaker_reset_s=60)
    for _ in range(2):
        assert (await registry.chat_async("support", QUESTION)).model == "base"
    assert registry.breaker.state("ft-support") == "open"
    result = await registry.chat_async("support", QUESTION)
    assert result.model == "base" and result.attempts == 1
    assert len(server.calls("ft-support")) == 2  # the third call never reached it
    assert registry.fallback_counts == {
        ("support", "server_error"): 2,
        ("support", "circuit_open"): 1,
    }
    await registry.aclose()


@pytest.mark.integration
@pytest.mark.slow
async def test_both_failing_raises_within_the_budget(server: FakeOpenAIServer) -> None:
    server.script("ft-support", ["timeout"] * 5)
    server.script("base", ["timeout"] * 5)
    # Without the budget this would take 2 models x 3 attempts x 0.4 s = 2.4 s.
    registry, _ = _registry(server, total_budget_s=1.0, attempt_timeout_s=0.4)
    started = time.monotonic()
    with pytest.raises(AllModelsFailedError) as info:
        await registry.chat_async("support", QUESTION)
    elapsed = time.monotonic() - started
    assert elapsed <= 1.0 + 0.4  # budget + grace/scheduling slack
    assert set(info.value.reasons) == {"ft-support", "base"}
    assert "LLMTimeoutError" in info.value.reasons["base"]
    assert "ft-support" in str(info.value) and "base" in str(info.value)
    await registry.aclose()


@pytest.mark.integration
async def test_both_failing_with_server_errors_names_each_reason(server: FakeOpenAIServer) -> None:
    server.script("ft-support", [500] * 3)
    server.script("base", [429] * 3)
    registry, _ = _registry(server)
    with pytest.raises(AllModelsFailedError) as info:
        await registry.chat_async("support", QUESTION)
    assert "LLMServerError" in info.value.reasons["ft-support"]
    assert "LLMRateLimitError" in info.value.reasons["base"]
    await registry.aclose()


@pytest.mark.integration
async def test_without_fallback_the_finetuned_error_is_raised(server: FakeOpenAIServer) -> None:
    server.script("ft-support", [500] * 3)
    registry, _ = _registry(server)
    with pytest.raises(LLMServerError):
        await registry.chat_async("support", QUESTION, use_fallback=False)
    assert server.calls("base") == [] and registry.fallback_counts == {}
    await registry.aclose()


@pytest.mark.integration
async def test_use_finetuned_false_and_agents_without_one_use_the_baseline(
    server: FakeOpenAIServer,
) -> None:
    registry, _ = _registry(server)
    for agent, flag in (("support", False), ("docs", True)):
        result = await registry.chat_async(agent, QUESTION, use_finetuned=flag)
        assert (result.model, result.fell_back) == ("base", False)
    assert server.calls("ft-support") == []
    await registry.aclose()


@pytest.mark.integration
async def test_generate_sends_prompt_ids_through_the_completions_backend(
    server: FakeOpenAIServer, gpt2: HFTokenizer
) -> None:
    server.script("ft-support", [500] * 3)
    registry = ModelRegistry(
        ROUTES, CompletionsBackend(server.base_url), backoff_base_s=0.01, backoff_jitter_s=0
    )
    ids = gpt2.encode_batch_sync(["Context. Question?"])[0]
    request = GenerationRequest("ignored", "Question?", QUESTION, prompt_ids=ids)
    result = await registry.generate("support", request)
    assert result.model == "base"
    assert server.calls("base")[0]["prompt"] == "Context. Question?"
    assert request.model == "ignored"  # the caller's request is not mutated
    await registry.aclose()


@pytest.mark.integration
async def test_generator_adapts_the_registry_for_the_rag_pipeline(
    server: FakeOpenAIServer, registries: list[ModelRegistry]
) -> None:
    server.script("ft-support", [500] * 3)
    registry, _ = _registry(server)
    registries.append(registry)
    generate = registry.generator("support")
    request = GenerationRequest("ignored", "Where?", QUESTION)
    assert (await generate(request)).text == "Baseline says hi."
    assert registry.fallback_counts == {("support", "server_error"): 1}
    with pytest.raises(UnknownAgentError):
        registry.generator("sales")


async def test_unknown_agent_lists_the_known_ones(
    server: FakeOpenAIServer, registries: list[ModelRegistry]
) -> None:
    registry, _ = _registry(server)
    registries.append(registry)
    with pytest.raises(UnknownAgentError, match="known agents: docs, support"):
        await registry.chat_async("sales", QUESTION)


def test_sync_chat_runs_outside_a_loop(
    server: FakeOpenAIServer, registries: list[ModelRegistry]
) -> None:
    registry, _ = _registry(server)
    registries.append(registry)
    for _ in range(2):  # a second call reconnects: the first released its loop's connections
        result = registry.chat("docs", QUESTION, max_tokens=3)
        assert result.generation.usage.completion_tokens == 3


async def test_sync_chat_refuses_inside_a_running_loop(
    server: FakeOpenAIServer, registries: list[ModelRegistry]
) -> None:
    registry, _ = _registry(server)
    registries.append(registry)
    with pytest.raises(RuntimeError, match="chat_async"):
        registry.chat("docs", QUESTION)


async def test_unknown_generation_option_is_named(
    server: FakeOpenAIServer, registries: list[ModelRegistry]
) -> None:
    registry, _ = _registry(server)
    registries.append(registry)
    with pytest.raises(TypeError, match="temprature"):
        await registry.chat_async("docs", QUESTION, temprature=0.1)


# -- budget arithmetic with a fake clock (no real waiting) ----------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class SlowFailingBackend:
    """Every call costs ``cost_s`` of fake time and fails with a 5xx."""

    def __init__(self, time_: FakeTime, cost_s: float) -> None:
        self.time = time_
        self.cost_s = cost_s
        self.calls: list[tuple[str, float]] = []

    @property
    def name(self) -> str:
        return "slow"

    async def generate(self, request: GenerationRequest) -> Generation:
        self.calls.append((request.model, request.timeout_s))
        self.time.now += min(self.cost_s, request.timeout_s)
        if request.timeout_s < self.cost_s:
            raise LLMTimeoutError("fake timeout")
        raise LLMServerError("fake 503")

    async def aclose(self) -> None:
        return None


async def test_retries_back_off_exponentially_and_stop_at_the_budget() -> None:
    fake = FakeTime()
    backend = SlowFailingBackend(fake, cost_s=1.0)
    registry = ModelRegistry(
        {"a": ModelRoute("ft", "base")},
        backend,
        total_budget_s=12.0,
        attempt_timeout_s=2.0,
        max_retries=10,
        backoff_base_s=1.0,
        backoff_max_s=8.0,
        backoff_jitter_s=0.0,
        breaker_failures=100,
        clock=fake.clock,
        sleep=fake.sleep,
    )
    with pytest.raises(AllModelsFailedError):
        await registry.chat_async("a", QUESTION)
    assert fake.now <= 12.0
    # The fine-tuned phase ends 2 s (one attempt timeout) before the deadline: after calls
    # at t=0, 2 and 5 its next backoff (4 s) would end at t=10, so the baseline takes over.
    assert [m for m, _ in backend.calls] == ["ft"] * 3 + ["base"] * 3
    assert fake.sleeps == [1.0, 2.0, 1.0, 2.0]
    assert backend.calls[-1] == ("base", 1.0)  # the last attempt gets only the time left


async def test_attempt_timeout_is_cut_to_the_time_left() -> None:
    fake = FakeTime()
    backend = SlowFailingBackend(fake, cost_s=3.0)
    registry = ModelRegistry(
        {"a": ModelRoute(None, "base")},
        backend,
        total_budget_s=5.0,
        attempt_timeout_s=3.0,
        max_retries=5,
        backoff_base_s=0.5,
        backoff_jitter_s=0.0,
        clock=fake.clock,
        sleep=fake.sleep,
    )
    with pytest.raises(AllModelsFailedError, match="LLMTimeoutError"):
        await registry.chat_async("a", QUESTION)
    assert [t for _, t in backend.calls] == [3.0, 1.5]
    assert fake.now == pytest.approx(5.0)


def test_model_route_needs_a_baseline() -> None:
    with pytest.raises(ValueError, match="baseline"):
        ModelRoute("ft", "")


def test_usage_total() -> None:
    assert Usage(3, 4).total_tokens == 7
