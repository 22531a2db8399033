"""Scheduler hints: the event loop's thread asks for a short slice; background threads
(the CPU executor's, the event writer's) run at a lower priority with the default slice."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from genesis._executor import CpuExecutor
from genesis._sched import (
    background_thread,
    current_slice_us,
    realtime_priority,
    request_realtime,
    request_slice,
)


def _in_thread(fn):  # type: ignore[no-untyped-def]
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def _needs_slices() -> None:
    if current_slice_us() is None or not _in_thread(lambda: request_slice(100)):
        pytest.skip("this kernel has no per-thread slices (Linux < 6.12)")


def test_a_thread_gets_the_slice_it_asks_for_and_the_default_back() -> None:
    _needs_slices()

    def ask() -> tuple[bool, float | None, float | None]:
        default = current_slice_us()
        took = request_slice(100)
        short = current_slice_us()
        request_slice(0)
        return took, short, (default, current_slice_us())  # type: ignore[return-value]

    took, short, (_, again) = _in_thread(ask)  # type: ignore[misc]
    assert took
    assert short == 100.0
    assert again != 100.0  # the kernel's default again (whatever the thread started with)


def test_the_nice_value_is_kept_when_the_slice_changes() -> None:
    def ask() -> int:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 3)
        request_slice(100)
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    assert _in_thread(ask) == 3


async def test_executor_threads_drop_the_loop_threads_short_slice_and_yield() -> None:
    _needs_slices()

    def probe() -> tuple[float | None, int]:
        return current_slice_us(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def started_from_a_short_slice_thread() -> tuple[float | None, int]:
        request_slice(100)
        executor = CpuExecutor(1)  # its thread is created from this one and inherits
        try:
            return executor._pool.submit(probe).result()
        finally:
            executor.shutdown()

    slice_us, nice = _in_thread(started_from_a_short_slice_thread)
    assert slice_us != 100.0
    assert nice == 10


def test_background_thread_lowers_the_priority() -> None:
    def ask() -> int:
        background_thread(7)
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    assert _in_thread(ask) == 7


def test_a_served_apps_loop_thread_asks_for_the_configured_slice() -> None:
    _needs_slices()
    from genesis.server._workers import ServeOptions, build_app

    def build() -> float | None:
        # the slice is what an ordinary loop thread keeps (a real-time one has no slice)
        overrides = {"server.loop_slice_us": "250", "server.loop_rt_priority": "0"}
        build_app(ServeOptions(overrides=overrides))
        return current_slice_us()

    before = sys.getswitchinterval()  # build_app sets the GIL switch interval too
    try:
        assert _in_thread(build) == 250.0
    finally:
        sys.setswitchinterval(before)


def _needs_realtime() -> None:
    if not _in_thread(lambda: request_realtime(1)):
        pytest.skip("this process may not take a real-time priority (no CAP_SYS_NICE)")


def test_a_thread_takes_a_realtime_priority_and_its_new_threads_stay_ordinary() -> None:
    _needs_realtime()

    def ask() -> tuple[int, int, int]:
        request_realtime(3)
        child = _in_thread(realtime_priority)  # SCHED_RESET_ON_FORK: not inherited
        return realtime_priority(), child, os.getpriority(os.PRIO_PROCESS, 0)

    mine, child, _ = _in_thread(ask)
    assert mine == 3
    assert child == 0
    assert realtime_priority() == 0  # pytest's own thread was never touched


async def test_executor_threads_of_a_realtime_loop_thread_are_ordinary_and_yield() -> None:
    _needs_realtime()

    def probe() -> tuple[int, int]:
        return realtime_priority(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def started_from_a_realtime_thread() -> tuple[int, int]:
        request_realtime(2)
        executor = CpuExecutor(1)
        try:
            return executor._pool.submit(probe).result()
        finally:
            executor.shutdown()

    assert _in_thread(started_from_a_realtime_thread) == (0, 10)


def test_background_thread_makes_a_realtime_thread_ordinary() -> None:
    _needs_realtime()

    def ask() -> int:
        request_realtime(2)
        background_thread(7)
        return realtime_priority()

    assert _in_thread(ask) == 0


def test_a_refused_realtime_priority_is_logged_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with caplog.at_level("INFO", logger="genesis._sched"):
        assert request_realtime(5) is False
    assert "server.loop_rt_priority 5 refused (Operation not permitted)" in caplog.text
    assert "CAP_SYS_NICE" in caplog.text
    assert realtime_priority() == 0
    assert request_realtime(0) is False  # out of range: not even asked
    assert request_realtime(100) is False


@pytest.mark.parametrize(("configured", "expected"), [("4", 4), ("0", 0)])
def test_a_served_apps_loop_thread_takes_the_configured_realtime_priority(
    configured: str, expected: int
) -> None:
    _needs_realtime()
    from genesis.server._workers import ServeOptions, build_app

    def build() -> int:
        build_app(ServeOptions(overrides={"server.loop_rt_priority": configured}))
        return realtime_priority()

    before = sys.getswitchinterval()
    try:
        assert _in_thread(build) == expected
    finally:
        sys.setswitchinterval(before)
