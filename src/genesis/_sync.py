"""The one way Genesis runs async code from sync code (the thin sync shells)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_blocking(call: Callable[[], Coroutine[Any, Any, T]], name: str, async_name: str) -> T:
    """Run ``call()`` to completion in a new event loop; refuse inside a running one.

    Takes a factory, not a coroutine: a coroutine made before the refusal would never be
    awaited (and warn).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(call())
    raise RuntimeError(f"{name}() cannot run inside a running event loop; await {async_name}()")
