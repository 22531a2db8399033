"""The CPU executor: worker threads, a bound on parallel work, context, replacement, shutdown."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator

import pytest

from genesis._executor import CpuExecutor, current_executor, install_executor, run_cpu
from genesis.errors import ExecutorClosedError

_REQUEST = contextvars.ContextVar("request", default="none")


@pytest.fixture
def executor() -> Iterator[CpuExecutor]:
    mine = CpuExecutor(2, name="test-cpu")
    previous = install_executor(mine)
    yield mine
    install_executor(previous)
    mine.shutdown()


async def test_work_runs_in_a_worker_thread_with_the_callers_context(
    executor: CpuExecutor,
) -> None:
    _REQUEST.set("r-42")

    def where(suffix: str) -> str:
        return f"{threading.current_thread().name}:{_REQUEST.get()}:{suffix}"

    name = await run_cpu(where, "x")
    assert name.startswith("test-cpu") and name.endswith(":r-42:x")
    assert threading.current_thread().name not in name


async def test_exceptions_come_back_to_the_caller(executor: CpuExecutor) -> None:
    def fail() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await run_cpu(fail)


async def test_no_more_than_workers_steps_run_at_once(executor: CpuExecutor) -> None:
    release = threading.Event()

    def step(n: int) -> int:
        release.wait(timeout=10)
        return n

    tasks = [asyncio.create_task(run_cpu(step, n)) for n in range(5)]
    await asyncio.sleep(0)  # every task has submitted its step (threads start on submit)
    workers = [t for t in threading.enumerate() if t.name.startswith("test-cpu")]
    release.set()
    assert await asyncio.gather(*tasks) == [0, 1, 2, 3, 4]
    assert len(workers) == 2


async def test_install_returns_the_replaced_executor_and_none_restores_a_default() -> None:
    first = CpuExecutor(1)
    previous = install_executor(first)
    try:
        assert current_executor() is first
        assert install_executor(None) is first
        default = current_executor()
        assert default is not first and default.workers >= 1
    finally:
        install_executor(previous)
        first.shutdown()


async def test_a_shut_down_executor_refuses_work_with_a_genesis_error() -> None:
    closed = CpuExecutor(1)
    closed.shutdown()
    with pytest.raises(ExecutorClosedError, match="shut down"):
        await closed.run(int, "1")


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers must be >= 1"):
        CpuExecutor(0)


async def test_worker_threads_run_at_a_lower_priority_than_the_loop() -> None:
    import os

    executor = CpuExecutor(1, nice=7)
    try:
        theirs = await executor.run(
            lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        )
        assert theirs == 7
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) != 7
    finally:
        executor.shutdown()
