"""The rate breaker (resilience4j-style window) and the registry's one verdict per request."""

from __future__ import annotations

import pytest

from genesis.errors import LLMServerError
from genesis.llm import (
    Generation,
    GenerationRequest,
    KeyedRateBreaker,
    Message,
    ModelRegistry,
    ModelRoute,
    RateCircuitBreaker,
    Usage,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_verdict_before_the_minimum_number_of_calls() -> None:
    breaker = RateCircuitBreaker(0.5, window=10, min_calls=4, reset_timeout_s=5, clock=Clock())
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()


def test_opens_on_the_rate_over_the_window_not_on_a_run() -> None:
    breaker = RateCircuitBreaker(0.5, window=10, min_calls=10, clock=Clock())
    for i in range(30):  # one failure in three: a flaky backend, never 50%
        breaker.record_failure() if i % 3 == 0 else breaker.record_success()
    assert breaker.state == "closed"
    for _ in range(5):
        breaker.record_failure()
    assert breaker.state == "open"


def test_old_verdicts_leave_the_window() -> None:
    breaker = RateCircuitBreaker(0.5, window=4, min_calls=4, clock=Clock())
    for _ in range(3):
        breaker.record_failure()
    for _ in range(4):
        breaker.record_success()
    assert breaker.observed_failure_rate == 0.0
    breaker.record_failure()
    assert breaker.state == "closed"


def test_half_open_probe_closes_with_a_fresh_window_or_reopens() -> None:
    clock = Clock()
    breaker = RateCircuitBreaker(0.5, window=4, min_calls=2, reset_timeout_s=10, clock=clock)
    breaker.force_open()
    assert breaker.state == "open"
    clock.now += 10
    assert breaker.allow() and not breaker.allow()  # one probe
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 10
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.observed_failure_rate == 0.0
    breaker.record_failure()  # one failure in a fresh window is below min_calls
    assert breaker.state == "closed"


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        RateCircuitBreaker(0.0)
    with pytest.raises(ValueError):
        RateCircuitBreaker(0.5, window=5, min_calls=6)


class _AlwaysFails:
    name = "fake"

    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, request: GenerationRequest) -> Generation:
        self.calls += 1
        if request.model == "base":
            return Generation("ok", "base", Usage(1, 1))
        raise LLMServerError("scripted 500")

    async def aclose(self) -> None:
        return None


async def test_a_request_counts_once_however_many_retries() -> None:
    backend = _AlwaysFails()
    routes = {"a": ModelRoute("ft", "base"), "b": ModelRoute(None, "base")}
    registry = ModelRegistry(
        routes, backend, max_retries=2, backoff_base_s=0.001, backoff_jitter_s=0
    )
    await registry.chat_async("a", [Message("user", "hi")])
    assert backend.calls == 4  # three attempts on ft, one on base
    breaker = registry.breaker
    assert isinstance(breaker, KeyedRateBreaker)
    ft = breaker.circuit("ft")
    assert ft.observed_failure_rate == 1.0 and len(ft._verdicts) == 1
    # "base" is shared by two agents: each agent has its own circuit for it.
    assert registry.breaker_key("a", "base") == "a:base"
    assert registry.breaker_key("b", "base") == "b:base"
    assert registry.breaker_key("a", "ft") == "ft"
    assert len(breaker.circuit("a:base")._verdicts) == 1
    assert len(breaker.circuit("b:base")._verdicts) == 0
