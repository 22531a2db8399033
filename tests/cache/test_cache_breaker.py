"""The token cache's circuit breaker, driven by a fake clock."""

from __future__ import annotations

import logging

import pytest

from genesis.cache import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(
        failure_threshold=3, reset_timeout_s=5.0, clock=clock, name="token-cache-l2"
    )


def test_opens_after_consecutive_failures_only(breaker: CircuitBreaker) -> None:
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the count
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.opened_count == 1


def test_half_opens_after_the_reset_timeout_with_one_probe(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.now = 4.9
    assert not breaker.allow()
    clock.now = 5.0
    assert breaker.allow()
    assert breaker.state == "half_open"
    assert not breaker.allow(), "only one probe at a time"


def test_a_successful_probe_closes_it(breaker: CircuitBreaker, clock: FakeClock) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.now = 5.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()


def test_a_failed_probe_reopens_it_for_another_timeout(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.now = 5.0
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now = 9.0
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()


def test_a_probe_that_never_reports_is_replaced(breaker: CircuitBreaker, clock: FakeClock) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.now = 5.0
    assert breaker.allow()
    clock.now = 10.0
    assert breaker.allow()


def test_state_changes_are_logged(
    breaker: CircuitBreaker, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="genesis._breaker"):
        for _ in range(3):
            breaker.record_failure()
        clock.now = 5.0
        breaker.allow()
        breaker.record_success()
    assert [m for m in caplog.messages if "->" in m] == [
        "circuit breaker token-cache-l2: closed -> open (failures=3)",
        "circuit breaker token-cache-l2: open -> half_open (failures=3)",
        "circuit breaker token-cache-l2: half_open -> closed (failures=0)",
    ]


@pytest.mark.parametrize(("threshold", "reset"), [(0, 1.0), (1, 0.0)])
def test_bad_settings_are_refused(threshold: int, reset: float) -> None:
    with pytest.raises(ValueError, match="failure_threshold|reset_timeout_s"):
        CircuitBreaker(failure_threshold=threshold, reset_timeout_s=reset)


def test_a_released_probe_lets_the_next_caller_probe_at_once(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    for _ in range(3):
        breaker.record_failure()
    clock.now = 5.0
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release_probe()  # the probe was cancelled before it could report
    assert breaker.allow(), "no second reset_timeout_s to wait"
    breaker.record_success()
    assert breaker.state == "closed"
