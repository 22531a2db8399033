"""The bounded background queue between requests and the event store.

A request only ever calls :meth:`EventRecorder.record`, a ``put_nowait``: it never waits for
the database. A full queue refuses the event and counts it (``dropped``, also a metric), so a
slow store costs events, visibly, instead of latency or memory. One daemon thread batches
the queue into ``store.write`` (up to ``batch_max`` events, or what arrived within
``flush_interval_s``); :meth:`close` stops taking events and writes everything still queued.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from genesis._sched import background_thread
from genesis.events._model import EventStore, RequestEvent

logger = logging.getLogger(__name__)

OnCount = Callable[[int], None]


def _ignore(_n: int) -> None:
    return None


@dataclass(frozen=True, slots=True)
class RecorderStats:
    queued: int  # waiting in the queue now
    written: int  # stored by the event store
    dropped: int  # refused by a full (or closed) queue
    failed: int  # lost because the store kept failing
    batches: int

    def as_dict(self) -> dict[str, int]:
        return {
            "queued": self.queued,
            "written": self.written,
            "dropped": self.dropped,
            "failed": self.failed,
            "batches": self.batches,
        }


class EventRecorder:
    """Events in (never blocking), batches out to the store on one background thread.

    ``open_store`` runs on first need (the thread's first batch or :meth:`store`), and the
    thread starts with the first event, so a process that records nothing (most CLI
    commands) opens no database and starts no thread. ``on_dropped`` and ``on_depth``
    report to metrics.
    """

    def __init__(
        self,
        open_store: Callable[[], EventStore],
        *,
        queue_max: int = 10_000,
        batch_max: int = 500,
        flush_interval_s: float = 0.5,
        write_attempts: int = 3,
        autostart: bool = True,
        on_dropped: OnCount = _ignore,
        on_depth: OnCount = _ignore,
    ) -> None:
        self._open_store = open_store
        # None is a wake-up call from close(), never stored.
        self._queue: queue.Queue[RequestEvent | None] = queue.Queue(maxsize=queue_max)
        self._batch_max = batch_max
        self._interval = flush_interval_s
        self._attempts = write_attempts
        self._autostart = autostart  # False: the thread waits for start() (tests)
        self._on_dropped = on_dropped
        self._on_depth = on_depth
        self._store: EventStore | None = None
        self._store_lock = threading.Lock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._hurry = threading.Event()  # a flush is waiting: write what is queued now
        self._closed = False
        self._thread: threading.Thread | None = None
        self._written = self._dropped = self._failed = self._batches = 0
        self._accepted = 0
        self._done = threading.Condition()  # notified after each batch is written or lost

    def start(self) -> None:
        """Start the writer thread (``record`` does on first use; idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="genesis-events", daemon=True)
            self._thread.start()

    def record(self, event: RequestEvent) -> bool:
        """Queue ``event`` without waiting; False (and counted) when the queue is full."""
        # The lock orders this against close(): an event either enters before the queue
        # closes (and is written by the final drain) or is counted as dropped.
        with self._lock:
            try:
                if self._closed:
                    raise queue.Full
                self._queue.put_nowait(event)
                self._accepted += 1
                if self._autostart:
                    self.start()
            except queue.Full:
                self._dropped += 1
                dropped = True
            else:
                dropped = False
        if dropped:
            self._on_dropped(1)
        return not dropped

    def store(self) -> EventStore:
        """The event store (opened on first call; blocking: call it off the event loop)."""
        with self._store_lock:
            if self._store is None:
                self._store = self._open_store()
            return self._store

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every event accepted so far is written (or lost); False on timeout.
        Blocking: call it off the event loop."""
        with self._lock:
            target = self._accepted
        self._hurry.set()
        with self._done:
            return self._done.wait_for(lambda: self._written + self._failed >= target, timeout_s)

    def stats(self) -> RecorderStats:
        return RecorderStats(
            self._queue.qsize(), self._written, self._dropped, self._failed, self._batches
        )

    def close(self, timeout_s: float = 60.0) -> None:
        """Refuse new events, write every queued one, close the store (blocking)."""
        with self._lock:
            self._closed = True
        self._stop.set()
        with contextlib.suppress(queue.Full):  # a full queue means the thread is not waiting
            self._queue.put_nowait(None)
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.error("event recorder did not finish within %.0f s", timeout_s)
                return
        else:
            self._drain()
        with self._store_lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    # -- the background thread ------------------------------------------------------------

    def _run(self) -> None:
        background_thread()  # writing events must not delay the event loop's thread
        while not self._stop.is_set():
            batch = self._next_batch()
            if batch:
                self._write(batch)
        self._drain()

    def _next_batch(self) -> list[RequestEvent]:
        """Wait for a first event, then gather more until the batch is full, a flush is
        waiting, or ``flush_interval_s`` has passed since that first one."""
        try:
            first = self._queue.get(timeout=self._interval)
        except queue.Empty:
            self._on_depth(0)
            return []
        batch = [] if first is None else [first]
        deadline = time.monotonic() + self._interval
        while len(batch) < self._batch_max:
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.is_set() or self._hurry.is_set():
                # Cleared before taking: whatever a waiting flush counted is queued by now.
                self._hurry.clear()
                batch.extend(self._take(self._batch_max - len(batch)))
                if not self._queue.empty():
                    self._hurry.set()  # a full batch: the rest goes at once too
                break
            try:
                item = self._queue.get(timeout=min(left, 0.05))
            except queue.Empty:
                continue
            if item is not None:
                batch.append(item)
        return batch

    def _take(self, limit: int) -> list[RequestEvent]:
        taken: list[RequestEvent] = []
        while len(taken) < limit:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                taken.append(item)
        return taken

    def _drain(self) -> None:
        while batch := self._take(self._batch_max):
            self._write(batch)
        self._on_depth(0)

    def _write(self, batch: list[RequestEvent]) -> None:
        for attempt in range(1, self._attempts + 1):
            try:
                self.store().write(batch)
            except Exception:  # any store failure: retried, then counted as lost
                logger.warning("event store write failed (attempt %d)", attempt, exc_info=True)
                time.sleep(min(0.1 * 2**attempt, 2.0))
                continue
            with self._done:
                self._written += len(batch)
                self._batches += 1
                self._done.notify_all()
            self._on_depth(self._queue.qsize())
            return
        with self._done:
            self._failed += len(batch)
            self._done.notify_all()
        logger.error("%d events lost: the event store failed %d times", len(batch), self._attempts)
