"""Session memory: conversation history per session, in-process or in Redis (pipelined,
bounded in turns, size and time).

``RedisSessionStore`` is imported on first access: redis-py costs ~50 ms to import, which the
in-process default (and every CLI start) should not pay.
"""

from typing import TYPE_CHECKING

from genesis._lazy import lazy_exports
from genesis.memory._store import (
    SESSION_ID_PATTERN,
    InProcessSessionStore,
    SessionLimits,
    SessionStore,
    SessionView,
    StoredTurn,
    check_session_id,
)

if TYPE_CHECKING:
    from genesis.memory._redis import RedisSessionStore

__all__ = [
    "SESSION_ID_PATTERN",
    "InProcessSessionStore",
    "RedisSessionStore",
    "SessionLimits",
    "SessionStore",
    "SessionView",
    "StoredTurn",
    "check_session_id",
]


__getattr__ = lazy_exports(
    __name__,
    {
        "RedisSessionStore": "genesis.memory._redis",
    },
)
