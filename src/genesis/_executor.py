"""The one bounded executor for a request's CPU- and disk-bound work.

The event loop does I/O and bookkeeping only; query embedding, dense and BM25 search, SQLite
reads, tokenizing cache misses, long prompt assembly, extractive answering and code-review
parsing are sent here with ``await run_cpu(fn, *args)``.

**Threads, not processes.** ``benchmarks/executor.py`` runs one uncached request's CPU work
(MiniLM query embedding + a 5-chunk ``tokenizers`` batch) serially, in 2 threads and in 2
processes, in one run. On this 2-core machine under load (load average ~5) it measured, in
two runs: threads 20.7 and 29.4 steps/s, processes 19.7 and 27.8, serial 20.5 and 29.3 (with no
idle core, neither pool gains; threads are ~5 % ahead of processes, which also start in ~1 s
and hold one model copy each); the event loop's longest stall was 218/132 ms with the steps
inline and 28/24 ms (p99 16/11 ms) with them in the thread pool. The reasons:

- The heavy steps release the GIL: NumPy's matrix products (the MiniLM forward pass, dense
  search), the Rust ``tokenizers`` batch encoders and SQLite run without it, so threads can
  use several cores at once (a quiet machine is needed to show that gain; this one had none
  to spare for either pool).
- A process pool needs its own copy of everything a step reads: the 90 MB of MiniLM weights,
  each collection's vector matrix, the BM25 postings, the SQLite catalog, and pickles every
  argument and result across a pipe. It measured no faster, and in-memory indexes (vectors,
  BM25, the L1 token cache) could not be shared with it at all.
- The pool is separate from the loop's default executor on purpose: ``asyncio`` resolves host
  names (``getaddrinfo``) and runs ``to_thread`` there, so a Redis or LLM reconnect must not
  queue behind embeddings.

The pool is bounded to ``workers`` threads (default: the cores this process may use; each of
``genesis serve --workers N``'s processes takes its share, cores // N, at least one), so at
most that many CPU steps run at once; the queue in front of it is bounded by the server's limit
on in-flight requests. Pure-Python steps still hold the GIL, but only for the interpreter's
switch interval (5 ms) at a time, so the loop keeps answering.

A process-wide executor is created on first use; an application (or a test) installs its own
with :func:`install_executor` and closes it with :meth:`CpuExecutor.shutdown`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from genesis._sched import background_thread
from genesis.errors import ExecutorClosedError

P = ParamSpec("P")
T = TypeVar("T")


def default_workers() -> int:
    """The number of cores this process may run on (its CPU affinity, else ``cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# Worker threads run at this nice value (see ``CpuExecutor._lower_priority``).
DEFAULT_NICE = 10


class CpuExecutor:
    """A bounded pool of ``workers`` threads for blocking CPU/disk steps.

    ``await executor.run(fn, *args, **kwargs)`` runs ``fn`` in a worker with the caller's
    context variables (as ``asyncio.to_thread`` does) and returns its result or raises its
    exception. Subclass and override :meth:`run` to observe the calls (tests count them).
    """

    def __init__(
        self, workers: int | None = None, *, name: str = "genesis-cpu", nice: int = DEFAULT_NICE
    ) -> None:
        count = default_workers() if workers is None else workers
        if count < 1:
            raise ValueError(f"workers must be >= 1, got {count}")
        if not 0 <= nice <= 19:
            raise ValueError(f"nice must be in 0..19, got {nice}")
        self._workers = count
        self._nice = nice
        self._pool = ThreadPoolExecutor(
            max_workers=count, thread_name_prefix=name, initializer=self._lower_priority
        )
        self._closed = False

    def _lower_priority(self) -> None:
        """Worker threads yield the cores to the event loop's thread (Linux schedules each
        thread with its own nice value). Measured here with 32 clients on 2 cores: the share
        of 10 ms loop-lag samples under 5 ms rose (one profiling run). A thread waiting for the
        GIL sleeps, so a low-priority holder still gets the core to release it."""
        if self._nice:
            background_thread(self._nice)

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def closed(self) -> bool:
        return self._closed

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker thread; the loop stays free meanwhile."""
        if self._closed:
            raise ExecutorClosedError("the CPU executor is shut down: the app is closing")
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await loop.run_in_executor(self._pool, call)

    def shutdown(self, *, wait: bool = True) -> None:
        """Refuse new work; with ``wait`` block until the running steps finish (idempotent)."""
        self._closed = True
        self._pool.shutdown(wait=wait, cancel_futures=True)


_lock = threading.Lock()
_current: CpuExecutor | None = None


def current_executor() -> CpuExecutor:
    """The installed executor, or a process-wide default made on first use."""
    global _current
    executor = _current
    if executor is None or executor.closed:
        with _lock:
            if _current is None or _current.closed:
                _current = CpuExecutor()
            executor = _current
    return executor


def install_executor(executor: CpuExecutor | None) -> CpuExecutor | None:
    """Make ``executor`` the one :func:`run_cpu` uses; return the one it replaces.

    ``None`` goes back to a default made on next use. The caller owns both: it shuts down
    the one it installed, and reinstalls (or shuts down) the one returned.
    """
    global _current
    with _lock:
        previous, _current = _current, executor
    return previous


async def run_cpu(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking step in the current :class:`CpuExecutor` (see the module docstring)."""
    return await current_executor().run(fn, *args, **kwargs)
