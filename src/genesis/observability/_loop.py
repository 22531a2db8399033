"""Event-loop lag: how late the loop wakes from a short sleep, sampled all the time.

A request that runs CPU work inline (a forward pass, a tokenizer, SQLite) delays every other
coroutine on the loop by as long as it runs; the lag of a 10 ms sleep measures exactly that
delay, without instrumenting any request. The samples go to the ``genesis_event_loop_lag_ms``
histogram (no-op while metrics are off) and a recent maximum is kept.

A stall has three possible causes, and on Linux the monitor tells them apart: for every sample
later than ``stall_ms`` it reads the loop thread's scheduler statistics
(``/proc/thread-self/schedstat``: time on a CPU, time runnable but waiting for one) and adds the
sample's whole duration to ``genesis_event_loop_stalled_seconds{cause}``:

- ``running``: the loop thread ran: callbacks, including any CPU work done inline;
- ``runqueue``: the thread was runnable but the OS ran something else (an oversubscribed
  machine: on 2 cores, the load generator, the fake model server and the other worker);
- ``other``: neither: waiting for the GIL (held by an executor thread's pure-Python step) or in
  a blocking call.

Measured with ``benchmarks/service_load.py`` on the 2-core machine, most of a stalled sample's
time was ``runqueue``; see the README.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from genesis.observability._metrics import record_loop_lag, record_loop_lag_max, record_loop_stall

logger = logging.getLogger(__name__)


class LoopLagMonitor:
    """Samples the running loop's lag every ``interval_s`` until :meth:`stop`.

    ``max_ms`` is the longest lag of the current or the last complete ``window_s`` window
    (published as the ``genesis_event_loop_lag_max_ms`` gauge), so a stall stays visible for
    at least one window. Use as ``async with LoopLagMonitor():`` or ``start()``/``await
    stop()`` from a FastAPI lifespan.
    """

    def __init__(
        self,
        interval_s: float = 0.01,
        *,
        window_s: float = 10.0,
        stall_ms: float = 5.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if interval_s <= 0 or window_s <= 0:
            raise ValueError("interval_s and window_s must be > 0")
        self._interval = interval_s
        self._window = window_s
        self._stall_ms = stall_ms
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._window_start = 0.0
        self._current_max = 0.0
        self._last_max = 0.0
        self.samples = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def max_ms(self) -> float:
        """The longest lag seen in the current or the previous window (ms)."""
        return max(self._current_max, self._last_max)

    def start(self) -> None:
        """Start sampling on the running loop (idempotent)."""
        if self.running:
            return
        self._window_start = self._clock()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        """Stop sampling and wait for the sampler to end (idempotent)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def __aenter__(self) -> LoopLagMonitor:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        sched = _SchedStat.open()
        try:
            await self._sample(sched)
        finally:
            sched.close()

    async def _sample(self, sched: _SchedStat) -> None:
        while True:
            began, before = self._clock(), sched.read()
            await asyncio.sleep(self._interval)
            woke, after = self._clock(), sched.read()
            lag_ms = max(0.0, (woke - began - self._interval) * 1000.0)
            if lag_ms > self._stall_ms and before and after:
                running, runqueue = after[0] - before[0], after[1] - before[1]
                elapsed = woke - began
                record_loop_stall(running, runqueue, max(0.0, elapsed - running - runqueue))
            self.observe(lag_ms, woke)

    def observe(self, lag_ms: float, now: float) -> None:
        """Record one sample taken at ``now`` (the sampler's clock)."""
        self.samples += 1
        record_loop_lag(lag_ms)
        if now - self._window_start >= self._window:
            self._last_max, self._current_max = self._current_max, 0.0
            self._window_start = now
        self._current_max = max(self._current_max, lag_ms)
        record_loop_lag_max(self.max_ms)
        if lag_ms >= 1000.0:
            logger.warning("event loop stalled for %.0f ms", lag_ms)


class _SchedStat:
    """The calling thread's time on a CPU and waiting for one (seconds), from
    ``/proc/thread-self/schedstat``; ``read()`` gives None where that file does not exist.

    The file is opened once, by the thread it describes (``thread-self`` names the opener's
    own entry), and re-read in place with ``pread``: one system call per read, where
    ``Path.read_text`` took an open, a read, a close and the text decoding, a visible part of
    the loop thread's own Python time under load in a py-spy sample."""

    PATH = Path("/proc/thread-self/schedstat")

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    @classmethod
    def open(cls) -> _SchedStat:
        try:
            return cls(os.open(cls.PATH, os.O_RDONLY))
        except OSError:
            return cls(None)

    def read(self) -> tuple[float, float] | None:
        if self._fd is None:
            return None
        running_ns, waiting_ns, _ = os.pread(self._fd, 128, 0).split()
        return int(running_ns) / 1e9, int(waiting_ns) / 1e9

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
