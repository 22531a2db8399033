"""Log lines written off the event loop: a stream handler whose writes happen on a thread.

``genesis serve`` logs one access line per request (``genesis.access``) and uvicorn's own
lines. A plain :class:`logging.StreamHandler` formats each record and calls ``write`` on the
thread that logged it, the event loop's, under the handler's lock: a blocking call on the
request path, and one that blocks for as long as whoever reads the stream (a terminal, a pipe
to a log collector, a container runtime) is slow to read. :class:`BackgroundStreamHandler`
takes the record on the caller's thread (the message and any traceback turned into text
there, so later changes to the arguments cannot alter it) and puts it on a bounded queue; one
background thread formats and writes. When the queue is full a record is dropped and counted
rather than waiting, and the next line written says how many were lost. ``flush`` (and
``close``, which :func:`logging.shutdown` calls at exit) waits for what is queued.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import TextIO

from genesis._sched import background_thread

_STOP = None


class BackgroundStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A :class:`logging.StreamHandler` that writes on its own thread (see the module).

    ``max_queued`` bounds the records waiting to be written; ``flush_timeout_s`` bounds how
    long :meth:`flush` and :meth:`close` wait for them.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        max_queued: int = 10_000,
        flush_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(stream)
        if max_queued < 1:
            raise ValueError(f"max_queued must be >= 1, got {max_queued}")
        self._queue: queue.Queue[logging.LogRecord | None] = queue.Queue(max_queued)
        self._flush_timeout_s = flush_timeout_s
        self._thread: threading.Thread | None = None
        self._owner_pid = 0
        self._start_lock = threading.Lock()
        self.dropped = 0  # records lost to a full queue since the last report

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record`` (never waits: a full queue drops it and counts it)."""
        try:
            self._started()
            self._queue.put_nowait(self._prepared(record))
        except queue.Full:
            self.dropped += 1
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Wait (at most ``flush_timeout_s``) until every queued record is written."""
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            deadline = time.monotonic() + self._flush_timeout_s
            while self._queue.unfinished_tasks and time.monotonic() < deadline:
                time.sleep(0.005)
        super().flush()

    def close(self) -> None:
        """Write what is queued, stop the thread and close as a stream handler does."""
        thread = self._thread
        if thread is not None and thread.is_alive() and self._owner_pid == os.getpid():
            self.flush()
            try:
                self._queue.put(_STOP, timeout=self._flush_timeout_s)
                thread.join(self._flush_timeout_s)
            except queue.Full:
                pass
        self._thread = None
        super().close()

    def _prepared(self, record: logging.LogRecord) -> logging.LogRecord:
        """A copy of ``record`` with the message and any traceback already text."""
        prepared = logging.makeLogRecord(record.__dict__)
        prepared.msg, prepared.args = record.getMessage(), None
        if record.exc_info:
            formatter = self.formatter or logging.Formatter()
            prepared.exc_text = record.exc_text or formatter.formatException(record.exc_info)
            prepared.exc_info = None
        return prepared

    def _started(self) -> None:
        """Start the writer thread on first use, and again in a forked child (a fork copies
        the queue but not the thread)."""
        if self._thread is not None and self._owner_pid == os.getpid():
            return
        with self._start_lock:
            if self._thread is not None and self._owner_pid == os.getpid():
                return
            if self._owner_pid != os.getpid():
                self._queue = queue.Queue(self._queue.maxsize)
            self._owner_pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="genesis-logs", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        background_thread()  # writing logs must not delay the event loop's thread
        while True:
            record = self._queue.get()
            try:
                if record is _STOP:
                    return
                if self.dropped:
                    lost, self.dropped = self.dropped, 0
                    self._write(_dropped_record(lost, record))
                self._write(record)
            finally:
                self._queue.task_done()

    def _write(self, record: logging.LogRecord) -> None:
        """Format and write one record. Only this thread writes, so without the handler's
        lock: `logging.shutdown` holds that lock while it calls :meth:`flush`, which waits
        for this thread (``StreamHandler.emit`` would take the lock again to flush)."""
        try:
            self.stream.write(self.format(record) + self.terminator)
            self.stream.flush()
        except Exception:
            self.handleError(record)


def _dropped_record(count: int, after: logging.LogRecord) -> logging.LogRecord:
    return logging.makeLogRecord(
        {
            "name": __name__,
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": f"{count} log records dropped: the log writer fell behind",
            "created": after.created,
        }
    )


def flush_background_logs(logger_name: str = "genesis") -> None:
    """Write what the :class:`BackgroundStreamHandler` of ``logger_name`` holds (each waits at
    most its ``flush_timeout_s``): at the end of a served app's lifespan, before the process
    may end without running exit handlers."""
    for handler in logging.getLogger(logger_name).handlers:
        if isinstance(handler, BackgroundStreamHandler):
            handler.flush()
