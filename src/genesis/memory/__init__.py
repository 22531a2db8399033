"""Session memory: conversation history per session, in-process or in Redis (pipelined,
bounded in turns, size and time)."""

from genesis.memory._store import (
    SESSION_ID_PATTERN,
    InProcessSessionStore,
    RedisSessionStore,
    SessionLimits,
    SessionStore,
    SessionView,
    StoredTurn,
    check_session_id,
)

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
