"""Server log lines are written on a background thread: a stream that blocks (a slow pipe to
a log collector) never blocks the thread that logs, nothing is lost while the queue has room,
and a full queue drops and counts instead of waiting."""

from __future__ import annotations

import asyncio
import io
import logging
import logging.config
import threading

import pytest

from genesis.server._logs import BackgroundStreamHandler, flush_background_logs


class BlockedStream(io.StringIO):
    """A stream whose writes wait until ``release`` is set (a reader that stopped reading)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.writer_threads: set[str] = set()

    def write(self, text: str) -> int:
        self.writer_threads.add(threading.current_thread().name)
        assert self.release.wait(30), "the test never released the stream"
        return super().write(text)


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    log = logging.getLogger(name)
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log


def test_logging_returns_while_the_stream_is_blocked_and_all_lines_follow_in_order() -> None:
    stream = BlockedStream()
    handler = BackgroundStreamHandler(stream)
    log = _logger(handler, "genesis.test.logs.blocked")
    try:
        for i in range(50):
            log.info("request %d", i)  # returns although every write is still waiting
        assert stream.getvalue() == ""
        stream.release.set()
        handler.flush()
        lines = stream.getvalue().splitlines()
        assert lines == [f"request {i}" for i in range(50)]
        assert stream.writer_threads == {"genesis-logs"}  # never the logging thread
    finally:
        stream.release.set()
        handler.close()


async def test_the_event_loop_keeps_running_while_the_log_stream_is_blocked() -> None:
    stream = BlockedStream()
    handler = BackgroundStreamHandler(stream)
    log = _logger(handler, "genesis.test.logs.loop")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        for i in range(20):
            log.warning("access %d", i)
            await asyncio.sleep(0.001)
        assert ticks >= 20  # a StreamHandler would have blocked in write() at the first line
    finally:
        task.cancel()
        stream.release.set()
        handler.close()
    assert len(stream.getvalue().splitlines()) == 20


def test_a_full_queue_drops_and_counts_and_the_next_line_says_so() -> None:
    stream = BlockedStream()
    handler = BackgroundStreamHandler(stream, max_queued=3)
    log = _logger(handler, "genesis.test.logs.full")
    try:
        for i in range(40):
            log.info("line %d", i)
        assert handler.dropped >= 40 - 3 - 1  # the queue, and at most one being written
        stream.release.set()
        handler.flush()
        log.info("after")
        handler.flush()
        text = stream.getvalue()
        assert "log records dropped: the log writer fell behind" in text
        assert text.splitlines()[-1] == "after"
        assert handler.dropped == 0
    finally:
        stream.release.set()
        handler.close()


def test_arguments_and_tracebacks_are_captured_when_logged_not_when_written() -> None:
    stream = BlockedStream()
    handler = BackgroundStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = _logger(handler, "genesis.test.logs.args")
    state = {"n": 1}
    try:
        log.info("state %s", state)
        state["n"] = 2  # changed after logging, before the write
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        stream.release.set()
        handler.flush()
        text = stream.getvalue()
        assert "INFO state {'n': 1}" in text
        assert "ERROR failed" in text
        assert "ValueError: boom" in text
        assert "Traceback" in text
    finally:
        stream.release.set()
        handler.close()


def test_close_writes_what_is_queued() -> None:
    stream = io.StringIO()
    handler = BackgroundStreamHandler(stream)
    log = _logger(handler, "genesis.test.logs.close")
    for i in range(100):
        log.info("x%d", i)
    handler.close()
    assert len(stream.getvalue().splitlines()) == 100


def test_flush_and_close_under_the_handlers_lock_write_everything() -> None:
    # What logging.shutdown does at exit: acquire, flush, close, release. A writer that needed
    # the handler's lock would wait for the release, so the lines would still be missing here.
    stream = io.StringIO()
    handler = BackgroundStreamHandler(stream, flush_timeout_s=0.5)
    log = _logger(handler, "genesis.test.logs.shutdown")
    for i in range(200):
        log.info("x%d", i)
    handler.acquire()
    try:
        handler.flush()
        written = len(stream.getvalue().splitlines())
        handler.close()
    finally:
        handler.release()
    assert written == 200


def test_a_bad_bound_is_named() -> None:
    with pytest.raises(ValueError, match="max_queued"):
        BackgroundStreamHandler(io.StringIO(), max_queued=0)


def test_the_served_log_configuration_writes_every_line_in_the_background() -> None:
    from genesis.server._workers import _log_config

    config = _log_config()
    background = "genesis.server._logs.BackgroundStreamHandler"
    assert config["handlers"][config["loggers"]["genesis"]["handlers"][0]]["class"] == background
    # uvicorn's start and stop lines stay synchronous (a re-raised SIGTERM skips exit handlers)
    assert config["handlers"]["default"]["class"] == "logging.StreamHandler"
    stream = io.StringIO()
    for handler in config["handlers"].values():
        handler["stream"] = stream
    saved = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
        for name in config["loggers"]
    }
    try:
        logging.config.dictConfig({**config, "disable_existing_loggers": False})
        logging.getLogger("genesis.access").info("POST /v1/ask 200 key=k1")
        flush_background_logs()
        assert "POST /v1/ask 200 key=k1" in stream.getvalue()
    finally:
        for name, (handlers, propagate) in saved.items():
            for handler in logging.getLogger(name).handlers:
                handler.close()
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate
