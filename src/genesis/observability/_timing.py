"""Per-stage wall-clock timings of one request (the waterfall)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StageTimer:
    """Collects ``{stage: milliseconds}`` in the order stages ran.

    A stage timed twice accumulates. ``total_ms`` is wall time since construction, so gaps
    between stages show up as the difference between the total and the sum of stages.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._start = clock()
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        begin = self._clock()
        try:
            yield
        finally:
            self.add(name, (self._clock() - begin) * 1000.0)

    def add(self, name: str, ms: float) -> None:
        self.stages[name] = self.stages.get(name, 0.0) + ms

    @property
    def total_ms(self) -> float:
        return (self._clock() - self._start) * 1000.0

    def as_dict(self, digits: int = 3) -> dict[str, float]:
        out = {k: round(v, digits) for k, v in self.stages.items()}
        out["total"] = round(self.total_ms, digits)
        return out

    def server_timing(self) -> str:
        """The value of an HTTP ``Server-Timing`` header (``embed;dur=10.9, ...``)."""
        parts = [f"{name};dur={ms:.3f}" for name, ms in self.stages.items()]
        parts.append(f"total;dur={self.total_ms:.3f}")
        return ", ".join(parts)
