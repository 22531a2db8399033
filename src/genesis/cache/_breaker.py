"""A small circuit breaker for the token cache's L2.

Why not ``purgatory`` (3.x, installed): its state model reads ``time.time()`` directly (no
injectable clock, so tests would sleep through reset timeouts), lets every concurrent request
through while half-open instead of one probe, signals "open" by raising its state object, and
routes each transition through an async unit of work/message bus — heavier than the ~1 us this
check may cost on the hot path. This class is synchronous, single-probe and clock-injected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

logger = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """closed -> (``failure_threshold`` consecutive failures) -> open -> (after
    ``reset_timeout_s``) -> half_open: ONE probe is let through; its success closes the
    breaker, its failure opens it again. A probe that never reports (cancelled) is replaced
    by a new one after another ``reset_timeout_s``.

    Callers ask :meth:`allow` before an operation and report :meth:`record_success` or
    :meth:`record_failure` after it. Not thread-safe (one event loop).
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        reset_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "token-cache-l2",
    ) -> None:
        if failure_threshold < 1 or reset_timeout_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout_s > 0")
        self._threshold = failure_threshold
        self._reset_s = reset_timeout_s
        self._clock = clock
        self._name = name
        self._state: BreakerState = "closed"
        self._failures = 0
        self._since = clock()  # when the breaker opened, or when the probe started
        self.opened_count = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    def allow(self) -> bool:
        """Whether the next operation may run (and, when half-open, become the probe)."""
        if self._state == "closed":
            return True
        if self._clock() - self._since < self._reset_s:
            return False
        self._set("half_open")
        return True

    def record_success(self) -> None:
        self._failures = 0
        if self._state != "closed":
            self._set("closed")

    def record_failure(self) -> None:
        self._failures += 1
        if self._state == "half_open" or self._failures >= self._threshold:
            if self._state != "open":
                self.opened_count += 1
            self._set("open")

    def _set(self, state: BreakerState) -> None:
        self._since = self._clock()
        if state != self._state:
            logger.warning(
                "circuit breaker %s: %s -> %s (failures=%s)",
                self._name,
                self._state,
                state,
                self._failures,
            )
        self._state = state
