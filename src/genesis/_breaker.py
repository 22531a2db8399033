"""The circuit breaker shared by the token cache (one circuit for L2) and the model registry
(one circuit per model).

Why not ``purgatory`` (a well-kept asyncio breaker): its state model reads ``time.time()``
directly (no injectable clock, so tests would sleep through reset timeouts), lets every
concurrent request through while half-open instead of one probe, and routes each transition
through an async unit of work and message bus, heavier than the ~1 us this check may cost on
the hot path. This one is synchronous, single-probe and clock-injected.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, Literal, Protocol, TypeVar

from genesis.observability import record_breaker_opened, record_breaker_state

logger = logging.getLogger(__name__)


class _Circuit(Protocol):
    @property
    def state(self) -> BreakerState: ...

    def allow(self) -> bool: ...

    def record_success(self) -> None: ...

    def record_failure(self) -> None: ...

    def release_probe(self) -> None: ...


C = TypeVar("C", bound=_Circuit)

BreakerState = Literal["closed", "open", "half_open"]
Clock = Callable[[], float]


class _OpenHalfOpen:
    """What both breakers share: open for ``reset_timeout_s``, then half-open with one probe
    at a time (a probe that never reports is replaced after another ``reset_timeout_s``).
    Subclasses decide when to open and close; they set ``_opened_at`` and ``_probe_at``."""

    reset_timeout_s: float
    name: str
    _clock: Clock
    _opened_at: float | None
    _probe_at: float | None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at < self.reset_timeout_s:
            return "open"
        return "half_open"

    def allow(self) -> bool:
        """Whether the next operation may run (when half-open, it becomes the probe)."""
        state = self.state
        if state != "half_open":
            return state == "closed"
        now = self._clock()
        if self._probe_at is not None and now - self._probe_at < self.reset_timeout_s:
            return False
        if self._probe_at is None:
            self._log("open", "half_open")
        self._probe_at = now
        return True

    def release_probe(self) -> None:
        """The half-open probe ended without a verdict (cancelled, e.g. its client went
        away): let the next caller probe at once instead of waiting ``reset_timeout_s``
        for a verdict that will never come."""
        self._probe_at = None

    def _log(self, old: BreakerState, new: BreakerState) -> None:
        raise NotImplementedError


class CircuitBreaker(_OpenHalfOpen):
    """closed -> (``failure_threshold`` consecutive failures) -> open -> (``reset_timeout_s``
    later) half_open: ONE probe is let through; its success closes the circuit, its failure
    opens it again. A probe that ends without a verdict is released with
    :meth:`release_probe`; one that never reports at all is replaced after another
    ``reset_timeout_s``, so a lost probe cannot wedge the circuit.

    Callers ask :meth:`allow` before an operation and report :meth:`record_success` or
    :meth:`record_failure` after it. Not thread-safe (one event loop).
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_timeout_s: float = 5.0,
        *,
        clock: Clock = time.monotonic,
        name: str = "circuit",
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if reset_timeout_s <= 0:
            raise ValueError(f"reset_timeout_s must be > 0, got {reset_timeout_s}")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.name = name
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_at: float | None = None
        self.opened_count = 0
        record_breaker_state(name, "closed")  # the series exists before the first failure

    def record_success(self) -> None:
        self._failures = 0
        if self._opened_at is not None:
            self._log(self.state, "closed")
        self._opened_at = self._probe_at = None

    def record_failure(self) -> None:
        self._failures += 1
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            if (state := self.state) != "open":
                self.opened_count += 1
                record_breaker_opened(self.name)
                self._log(state, "open")
            self._opened_at = self._clock()
            self._probe_at = None

    def _log(self, old: BreakerState, new: BreakerState) -> None:
        record_breaker_state(self.name, new)
        logger.warning(
            "circuit breaker %s: %s -> %s (failures=%s)", self.name, old, new, self._failures
        )


class _Keyed(Generic[C]):
    """One circuit per key (e.g. per model), created on first use by ``_new``."""

    def __init__(self, new: Callable[[str], C]) -> None:
        self._new = new
        self._circuits: dict[str, C] = {}

    def circuit(self, key: str) -> C:
        circuit = self._circuits.get(key)
        if circuit is None:
            circuit = self._circuits[key] = self._new(key)
        return circuit

    def state(self, key: str) -> BreakerState:
        circuit = self._circuits.get(key)
        return "closed" if circuit is None else circuit.state

    def allow(self, key: str) -> bool:
        return self.circuit(key).allow()

    def record_success(self, key: str) -> None:
        self.circuit(key).record_success()

    def record_failure(self, key: str) -> None:
        self.circuit(key).record_failure()

    def release_probe(self, key: str) -> None:
        self.circuit(key).release_probe()


class KeyedCircuitBreaker(_Keyed["CircuitBreaker"]):
    """One :class:`CircuitBreaker` per key (e.g. per model), created on first use."""

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_timeout_s: float = 30.0,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        CircuitBreaker(failure_threshold, reset_timeout_s)  # validate now, not on first use
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        super().__init__(
            lambda key: CircuitBreaker(failure_threshold, reset_timeout_s, clock=clock, name=key)
        )


class RateCircuitBreaker(_OpenHalfOpen):
    """A breaker that opens on a failure *rate*, as resilience4j's count-based one does.

    The last ``window`` verdicts are kept; once at least ``min_calls`` of them are in, the
    circuit opens when the share of failures reaches ``failure_rate``. Open, it refuses calls
    for ``reset_timeout_s``; then one probe is let through (half-open): its success closes the
    circuit with a fresh window, its failure opens it again. :meth:`force_open` opens it at
    once (a replica that refuses connections is down, not flaky).

    Why a rate and not N consecutive failures: a backend that fails 50% of calls at random
    gives three failures in a row every eighth call, so a consecutive-count breaker kept
    opening on a model that retries would serve; a rate over a window tells "flaky" from
    "down". Callers record one verdict per request, not per retry. Not thread-safe.
    """

    def __init__(
        self,
        failure_rate: float = 0.5,
        window: int = 20,
        min_calls: int = 10,
        reset_timeout_s: float = 30.0,
        *,
        clock: Clock = time.monotonic,
        name: str = "circuit",
    ) -> None:
        _check_rate_settings(failure_rate, window, min_calls, reset_timeout_s)
        self.failure_rate = failure_rate
        self.window = window
        self.min_calls = min_calls
        self.reset_timeout_s = reset_timeout_s
        self.name = name
        self._clock = clock
        self._verdicts: deque[bool] = deque(maxlen=window)  # True = failure
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_at: float | None = None
        self.opened_count = 0
        record_breaker_state(name, "closed")  # the series exists before the first failure

    @property
    def observed_failure_rate(self) -> float:
        return self._failures / len(self._verdicts) if self._verdicts else 0.0

    def record_success(self) -> None:
        if self._opened_at is not None:
            if self.state == "open":
                return  # a late verdict from before the circuit opened
            self._log("half_open", "closed")
            self._opened_at = self._probe_at = None
            self._reset_window()
            return
        self._push(False)

    def record_failure(self) -> None:
        if self._opened_at is not None:
            if self.state == "half_open":
                self._open("half_open")
            return
        self._push(True)
        if len(self._verdicts) >= self.min_calls and self.observed_failure_rate >= (
            self.failure_rate
        ):
            self._open("closed")

    def force_open(self) -> None:
        if self.state != "open":
            self._open(self.state)

    def _push(self, failed: bool) -> None:
        if len(self._verdicts) == self.window and self._verdicts[0]:
            self._failures -= 1
        self._verdicts.append(failed)
        self._failures += failed

    def _reset_window(self) -> None:
        self._verdicts.clear()
        self._failures = 0

    def _open(self, old: BreakerState) -> None:
        self.opened_count += 1
        record_breaker_opened(self.name)
        logger.warning(
            "circuit breaker %s: %s -> open (failure rate %.2f over %d calls)",
            self.name,
            old,
            self.observed_failure_rate,
            len(self._verdicts),
        )
        self._opened_at = self._clock()
        self._probe_at = None
        self._reset_window()

    def _log(self, old: BreakerState, new: BreakerState) -> None:
        record_breaker_state(self.name, new)
        logger.warning("circuit breaker %s: %s -> %s", self.name, old, new)


class KeyedRateBreaker(_Keyed["RateCircuitBreaker"]):
    """One :class:`RateCircuitBreaker` per key (e.g. ``agent:model``), created on first use.

    Same surface as :class:`KeyedCircuitBreaker`, so the model registry takes either.
    """

    def __init__(
        self,
        failure_rate: float = 0.5,
        window: int = 20,
        min_calls: int = 10,
        reset_timeout_s: float = 30.0,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        _check_rate_settings(failure_rate, window, min_calls, reset_timeout_s)
        settings = (failure_rate, window, min_calls, reset_timeout_s)
        super().__init__(lambda key: RateCircuitBreaker(*settings, clock=clock, name=key))


def _check_rate_settings(
    failure_rate: float, window: int, min_calls: int, reset_timeout_s: float
) -> None:
    if not 0 < failure_rate <= 1:
        raise ValueError(f"failure_rate must be in (0, 1], got {failure_rate}")
    if window < 1 or not 1 <= min_calls <= window:
        raise ValueError(f"need 1 <= min_calls <= window, got {min_calls} and {window}")
    if reset_timeout_s <= 0:
        raise ValueError(f"reset_timeout_s must be > 0, got {reset_timeout_s}")
