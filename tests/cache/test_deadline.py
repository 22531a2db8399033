"""`within`: a deadline with ``asyncio.timeout``'s semantics."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest

from genesis.cache._deadline import within


async def test_a_result_in_time_is_returned() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await within(answer(), 1.0) == 42
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_past_the_deadline_the_awaitable_is_cancelled_and_timeout_raised() -> None:
    cancelled = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        await within(hang(), 0.01)
    assert cancelled.is_set()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)  # the task is usable afterwards: no pending cancellation


async def test_a_cancellation_from_outside_is_never_turned_into_a_timeout() -> None:
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(within(hang(), 5.0))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_outer_deadline_wins_over_a_longer_inner_one() -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await within(asyncio.sleep(10), 5.0)


async def test_an_awaitable_that_swallows_the_cancel_leaves_the_task_balanced() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "finished anyway"
        return "in time"

    assert await within(stubborn(), 0.01) == "finished anyway"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)


def _hold_the_loop(seconds: float) -> None:
    """Blocking work run inline in a coroutine, as an un-offloaded request stage would."""
    time.sleep(seconds)


async def test_a_reply_that_arrived_while_the_loop_was_stalled_is_not_a_timeout() -> None:
    """The reply is in the socket before the deadline, but the loop is blocked past it."""
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=left)

    async def stall() -> None:
        right.send(b"x")  # the "server" answers at once...
        _hold_the_loop(0.15)  # ...while another request holds the loop past the deadline

    try:
        staller = loop.create_task(stall())
        assert await within(reader.read(1), 0.02) == b"x"
        await staller
    finally:
        writer.close()
        right.close()


async def test_a_stalled_loop_forgives_at_most_max_lag_s() -> None:
    async def hog() -> None:
        for _ in range(20):
            _hold_the_loop(0.03)  # a loop that never gets free
            await asyncio.sleep(0)

    hogger = asyncio.get_running_loop().create_task(hog())
    with pytest.raises(TimeoutError):
        await within(asyncio.sleep(10), 0.01, max_lag_s=0.1)
    hogger.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await hogger
