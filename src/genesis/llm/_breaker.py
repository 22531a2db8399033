"""A small per-key circuit breaker with an injectable clock.

Why not ``purgatory`` (installed, v3): its ``OpenedState`` reads ``time.time()`` directly, so
the reset timeout cannot be driven by an injected clock in tests, and its async factory routes
every state change through a message bus and unit-of-work we do not need for an in-process,
per-model breaker. This class is ~50 lines, synchronous (no awaits inside), and tested.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    probe_at: float | None = None  # when the half-open probe was let through


class CircuitBreaker:
    """Opens a key after ``failure_threshold`` consecutive failures.

    While open, :meth:`allow` answers False. After ``reset_timeout_s`` the key is half-open:
    one probe call is allowed (another one only if that probe's outcome is not recorded
    within ``reset_timeout_s``, so a lost probe cannot wedge the key). A success closes the
    key; a failure while half-open opens it again for another ``reset_timeout_s``.
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_timeout_s: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if reset_timeout_s <= 0:
            raise ValueError(f"reset_timeout_s must be > 0, got {reset_timeout_s}")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def state(self, key: str) -> BreakerState:
        circuit = self._circuits.get(key)
        if circuit is None or circuit.opened_at is None:
            return "closed"
        if self._clock() - circuit.opened_at < self.reset_timeout_s:
            return "open"
        return "half_open"

    def allow(self, key: str) -> bool:
        """May a call to ``key`` go ahead now? (Marks the half-open probe when it may.)"""
        state = self.state(key)
        if state == "closed":
            return True
        if state == "open":
            return False
        circuit = self._circuits[key]
        now = self._clock()
        if circuit.probe_at is not None and now - circuit.probe_at < self.reset_timeout_s:
            return False
        circuit.probe_at = now
        return True

    def record_success(self, key: str) -> None:
        if self._circuits.pop(key, None) is not None:
            logger.info("circuit for %s closed after a successful call", key)

    def record_failure(self, key: str) -> None:
        circuit = self._circuits.setdefault(key, _Circuit())
        circuit.failures += 1
        half_open = circuit.opened_at is not None
        if half_open or circuit.failures >= self.failure_threshold:
            circuit.opened_at = self._clock()
            circuit.probe_at = None
            logger.warning("circuit for %s opened after %d failures", key, circuit.failures)
