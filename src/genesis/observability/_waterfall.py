"""One request's latency waterfall: stages that add up to the measured total.

The outermost middleware opens a :class:`Waterfall` in a context variable; everything on the
request's path adds its stage to it (:func:`request_stage`, or :meth:`Waterfall.add` with a
stage timed elsewhere). :meth:`Waterfall.finish` takes the total once, when the response is
rendered, and reports what no stage covered as ``other`` (the remainder, never hidden), so
``sum(stages) + other == total`` by construction and ``other`` says how much is unexplained.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

# The order a waterfall is drawn in; stages not listed follow, in the order they ran.
STAGE_ORDER = (
    "auth",
    "route",
    "session_read",
    "embed",
    "retrieve",
    "token_cache",
    "assemble",
    "evidence",
    "generate",
    "session_write",
    "tracking",
    "serialize",
)

_current: ContextVar[Waterfall | None] = ContextVar("genesis_waterfall", default=None)


class Waterfall:
    """Stage times (ms) of one request since ``start`` (a ``clock()`` reading)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.start = clock()
        self.stages: dict[str, float] = {}

    def add(self, name: str, ms: float) -> None:
        self.stages[name] = self.stages.get(name, 0.0) + ms

    def add_pipeline(self, timings: Mapping[str, float]) -> None:
        """The stages a :class:`genesis.rag.TokenCachedRAG` answer (and the router) timed."""
        for name, ms in timings.items():
            if name != "total":
                self.add(name, ms)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        began = self._clock()
        try:
            yield
        finally:
            self.add(name, (self._clock() - began) * 1000.0)

    def finish(self) -> dict[str, float]:
        """``{stage: ms, ..., "other": ms, "total": ms}`` with the total taken now."""
        total = (self._clock() - self.start) * 1000.0
        ordered = {k: self.stages[k] for k in STAGE_ORDER if k in self.stages}
        ordered.update((k, v) for k, v in self.stages.items() if k not in ordered)
        covered = sum(ordered.values())
        # Stages are sequential, so they cannot cover more than the total; if a clock
        # disagreement ever made them, the total grows to their sum rather than "other" < 0.
        out = {k: round(v, 3) for k, v in ordered.items()}
        out["other"] = round(max(total - covered, 0.0), 3)
        out["total"] = round(max(total, covered), 3)
        return out


def server_timing(waterfall: Mapping[str, float]) -> str:
    """The ``Server-Timing`` header value of a finished waterfall."""
    return ", ".join(f"{name};dur={ms:.3f}" for name, ms in waterfall.items())


def begin_waterfall(clock: Callable[[], float] = time.perf_counter) -> tuple[Waterfall, object]:
    """Open a waterfall for the current context; returns it and the token for
    :func:`end_waterfall`."""
    waterfall = Waterfall(clock)
    return waterfall, _current.set(waterfall)


def end_waterfall(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def current_waterfall() -> Waterfall | None:
    """The waterfall of the request being served here, if any (None in the CLI)."""
    return _current.get()


@contextmanager
def request_stage(name: str) -> Iterator[None]:
    """Time a block as stage ``name`` of the current request (a no-op outside one)."""
    waterfall = _current.get()
    if waterfall is None:
        yield
        return
    with waterfall.stage(name):
        yield
