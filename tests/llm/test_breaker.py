"""The per-model circuit breaker, driven by a fake clock."""

from __future__ import annotations

import pytest

from genesis.llm import KeyedCircuitBreaker as CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_consecutive_failures() -> None:
    breaker = CircuitBreaker(3, 10.0, clock=Clock())
    for _ in range(2):
        breaker.record_failure("m")
    assert breaker.state("m") == "closed" and breaker.allow("m")
    breaker.record_failure("m")
    assert breaker.state("m") == "open" and not breaker.allow("m")


def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(2, 10.0, clock=Clock())
    breaker.record_failure("m")
    breaker.record_success("m")
    breaker.record_failure("m")
    assert breaker.state("m") == "closed"


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    breaker.record_failure("m")
    clock.now += 10.0
    assert breaker.state("m") == "half_open"
    assert breaker.allow("m") is True
    assert breaker.allow("m") is False  # the probe is in flight
    breaker.record_success("m")
    assert breaker.state("m") == "closed" and breaker.allow("m")


def test_failed_probe_opens_again_for_a_full_reset_timeout() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 10.0, clock=clock)
    for _ in range(3):
        breaker.record_failure("m")
    clock.now += 11.0
    assert breaker.allow("m")
    breaker.record_failure("m")
    assert breaker.state("m") == "open"
    clock.now += 9.0
    assert not breaker.allow("m")


def test_keys_are_independent() -> None:
    breaker = CircuitBreaker(1, 10.0, clock=Clock())
    breaker.record_failure("a")
    assert breaker.state("a") == "open" and breaker.state("b") == "closed"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(0)
    with pytest.raises(ValueError, match="reset_timeout_s"):
        CircuitBreaker(1, 0)
