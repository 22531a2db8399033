"""`within`: await with a deadline, for the token cache's hot path.

Same semantics as ``async with asyncio.timeout(s): return await aw`` on Python 3.11 (the
awaitable is cancelled at the deadline and ``TimeoutError`` raised; a cancellation from
outside is never turned into a timeout nor swallowed), at less cost: one timer handle and
no context-manager object. Measured here: ~1.6 us per call against ~3.9 us for
``asyncio.timeout`` and ~12 us for ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(aw: Awaitable[T], seconds: float) -> T:
    """Await ``aw`` in the current task; past ``seconds``, cancel it and raise TimeoutError."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("within() must be awaited inside a task")
    cancelling = task.cancelling()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    handle = task.get_loop().call_later(seconds, expire)
    try:
        result = await aw
    except asyncio.CancelledError:
        if expired and task.uncancel() <= cancelling:
            raise TimeoutError(f"timed out after {seconds} s") from None
        raise
    finally:
        handle.cancel()
    if expired:  # the awaitable swallowed our cancellation: keep the task's count balanced
        task.uncancel()
    return result
