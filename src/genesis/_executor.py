"""The one bounded executor for a request's CPU- and disk-bound work.

The event loop does I/O and bookkeeping only; query embedding, dense and BM25 search, SQLite
reads, tokenizing cache misses, long prompt assembly, extractive answering and code-review
parsing are sent here with ``await run_cpu(fn, *args)``.

**Threads, not processes** (measured by ``benchmarks/executor.py``, which writes JSON):

- The heavy steps release the GIL: NumPy's matrix products (the MiniLM forward pass, dense
  search), the Rust ``tokenizers`` batch encoders and SQLite all run without it, so a pool of
  threads keeps every core busy.
- A process pool would need its own copy of everything a step reads: the 90 MB of MiniLM
  weights, each collection's vector matrix, the BM25 postings, the SQLite catalog, and would
  pickle every argument and result (vectors, token IDs, chunks) across a pipe. A request's
  steps are 0.1-40 ms; the copy and the pickling cost more than they save, and in-memory
  indexes could not be shared at all.
- The pool is separate from the loop's default executor on purpose: ``asyncio`` resolves host
  names (``getaddrinfo``) and runs ``to_thread`` there, so a Redis or LLM reconnect must not
  queue behind embeddings.

The pool is bounded to ``workers`` threads (default: the cores this process may use), so at
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

from genesis.errors import ExecutorClosedError

P = ParamSpec("P")
T = TypeVar("T")


def default_workers() -> int:
    """The number of cores this process may run on (its CPU affinity, else ``cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class CpuExecutor:
    """A bounded pool of ``workers`` threads for blocking CPU/disk steps.

    ``await executor.run(fn, *args, **kwargs)`` runs ``fn`` in a worker with the caller's
    context variables (as ``asyncio.to_thread`` does) and returns its result or raises its
    exception. Subclass and override :meth:`run` to observe the calls (tests count them).
    """

    def __init__(self, workers: int | None = None, *, name: str = "genesis-cpu") -> None:
        count = default_workers() if workers is None else workers
        if count < 1:
            raise ValueError(f"workers must be >= 1, got {count}")
        self._workers = count
        self._pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix=name)
        self._closed = False

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
