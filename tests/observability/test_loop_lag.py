"""The event-loop lag monitor and metrics merged across worker processes."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from genesis.observability import (
    MULTIPROC_ENV,
    LoopLagMonitor,
    disable_metrics,
    enable_metrics,
    render_metrics,
)


@pytest.fixture
def metrics() -> Iterator[None]:
    enable_metrics()
    try:
        yield
    finally:
        disable_metrics()


def lag_count(text: str, le: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'genesis_event_loop_lag_seconds_bucket{{le="{le}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no bucket le={le} in metrics")


async def test_a_blocked_loop_shows_as_lag(metrics: None) -> None:
    async with LoopLagMonitor(interval_s=0.005) as monitor:
        await asyncio.sleep(0.05)
        time.sleep(0.12)  # noqa: ASYNC251 - the stand-in for CPU work run inline on the loop
        await asyncio.sleep(0.03)
    assert monitor.max_ms >= 100.0
    assert not monitor.running
    text = render_metrics()[0].decode()
    assert lag_count(text, "1.0") - lag_count(text, "0.05") >= 1
    assert "genesis_event_loop_lag_max_seconds" in text


async def test_an_idle_loop_samples_small_lags() -> None:
    async with LoopLagMonitor(interval_s=0.005) as monitor:
        await asyncio.sleep(0.1)
    # Sampling happens; how small an idle lag is belongs to benchmarks, not to a test.
    assert monitor.samples >= 1
    assert monitor.max_ms >= 0.0


def test_the_recent_max_forgets_after_two_windows() -> None:
    monitor = LoopLagMonitor(window_s=10.0)
    monitor.observe(80.0, 1.0)
    monitor.observe(2.0, 12.0)  # a new window: the previous maximum is still shown
    assert monitor.max_ms == 80.0
    monitor.observe(3.0, 23.0)
    assert monitor.max_ms == 3.0


async def test_start_and_stop_are_idempotent() -> None:
    monitor = LoopLagMonitor()
    monitor.start()
    monitor.start()
    await monitor.stop()
    await monitor.stop()
    assert not monitor.running


_CHILD = """
import sys
from genesis.observability import LoopLagMonitor, enable_metrics, forget_this_process
enable_metrics()
LoopLagMonitor().observe(float(sys.argv[1]), 0.0)
if sys.argv[2:] == ["exit"]:
    forget_this_process()
"""


def test_metrics_of_several_processes_are_merged(tmp_path: Path, metrics: None) -> None:
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path)}
    for args in (["0.7"], ["40"], ["400", "exit"]):
        subprocess.run([sys.executable, "-c", _CHILD, *args], env=env, check=True, timeout=60)
    os.environ[MULTIPROC_ENV] = str(tmp_path)
    try:
        text = render_metrics()[0].decode()
    finally:
        del os.environ[MULTIPROC_ENV]
    assert lag_count(text, "0.001") == 1
    assert lag_count(text, "0.05") == 2
    assert lag_count(text, "+Inf") == 3  # counts of an exited process stay in the sums
    # ...but its live gauges do not: two processes still report themselves up.
    assert len(re.findall(r'^genesis_process_up\{pid="\d+"\} 1\.0$', text, re.M)) == 2


def stalled(text: str, cause: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'genesis_event_loop_stalled_seconds_total{{cause="{cause}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.skipif(not Path("/proc/thread-self/schedstat").exists(), reason="Linux schedstat")
async def test_a_stall_is_attributed_to_running_or_to_a_blocking_call(metrics: None) -> None:
    async with LoopLagMonitor(interval_s=0.005):
        await asyncio.sleep(0.02)
        end = time.perf_counter() + 0.1
        while time.perf_counter() < end:  # CPU work inline: the loop thread is running
            pass
        await asyncio.sleep(0.02)
    text = render_metrics()[0].decode()
    busy = stalled(text, "running") + stalled(text, "runqueue")
    assert busy >= 0.09  # on a CPU, or waiting for one: never "other" while spinning
    assert stalled(text, "other") < 0.05

    async with LoopLagMonitor(interval_s=0.005):
        await asyncio.sleep(0.02)
        time.sleep(0.1)  # noqa: ASYNC251 - a blocking call: the thread is off the CPU
        await asyncio.sleep(0.02)
    text = render_metrics()[0].decode()
    assert stalled(text, "other") >= 0.09


def test_schedstat_reads_the_opening_threads_own_cpu_time_again_and_again() -> None:
    import threading

    from genesis.observability._loop import _SchedStat

    if not _SchedStat.PATH.exists():
        pytest.skip("no /proc/thread-self/schedstat here")
    out: dict[str, float] = {}

    def spend(cpu_seconds: float) -> None:
        """Run until this thread has used ``cpu_seconds`` of CPU (the kernel's own count)."""
        end = time.thread_time() + cpu_seconds
        while time.thread_time() < end:
            pass

    def measure() -> None:
        sched = _SchedStat.open()
        try:
            first = sched.read()
            other = threading.Thread(target=spend, args=(0.2,))
            other.start()
            other.join()  # another thread's CPU time is not this one's
            second = sched.read()
            spend(0.2)
            third = sched.read()
        finally:
            sched.close()
        assert first and second and third
        out["other"] = second[0] - first[0]
        out["own"] = third[0] - second[0]
        assert sched.read() is None  # closed

    thread = threading.Thread(target=measure)
    thread.start()
    thread.join()
    assert out["own"] >= 0.19  # the same CPU time the thread's clock counted
    assert out["other"] < 0.1
