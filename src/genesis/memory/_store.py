"""Session stores: a conversation's turns, bounded in length, size and time.

Two backends behind one Protocol. :class:`InProcessSessionStore` (the embedded default) keeps
sessions in a bounded LRU dict. :class:`RedisSessionStore` (in ``_redis.py``, so that redis-py
is imported only when Redis is configured) keeps each session as a Redis list of JSON turns, so
sessions are shared by workers and survive a server restart:

- reading a session is ONE round trip: a pipeline of ``LRANGE key -max_turns -1`` and
  ``TTL key`` (the turns and how long they are kept);
- appending a turn is ONE round trip: a ``MULTI`` pipeline of ``RPUSH``, ``LTRIM`` to the
  newest ``max_turns`` and ``EXPIRE`` (every turn renews the session's time to live).

A session belongs to an owner (the API key id that wrote it): keys are
``{prefix}:{owner}:{session id}``, so one key can neither read nor delete another key's
sessions, even with the same session id. Every redis-py error becomes :class:`SessionError`.
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

# Room for opaque ids, UUIDs and e-mail style user ids; nothing Redis or a URL path minds.
SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$"
_SESSION_ID = re.compile(SESSION_ID_PATTERN)
_TRUNCATED = " …[truncated]"


@dataclass(frozen=True, slots=True)
class StoredTurn:
    """One exchange as stored: the question, the answer, the agent and when (Unix seconds)."""

    question: str
    answer: str
    agent: str
    created: float

    def encode(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False).encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes | str) -> StoredTurn | None:
        """The turn, or None for an entry that is not one (never served as history)."""
        try:
            data = json.loads(raw)
            return cls(
                str(data["question"]),
                str(data["answer"]),
                str(data["agent"]),
                float(data["created"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session as read: its turns (oldest first) and the seconds it is still kept."""

    turns: list[StoredTurn]
    ttl_s: float | None


@dataclass(frozen=True, slots=True)
class SessionLimits:
    max_turns: int = 20
    ttl_s: int = 86_400
    max_turn_chars: int = 16_000


def check_session_id(session_id: str) -> str:
    if not _SESSION_ID.fullmatch(session_id):
        raise ValueError(
            "session id must be 1-128 characters of [A-Za-z0-9_.:@+-], starting with a letter "
            "or digit"
        )
    return session_id


def bounded_turn(turn: StoredTurn, max_chars: int) -> StoredTurn:
    """``turn`` with question and answer cut to ``max_chars`` each (marked as cut)."""

    def cut(text: str) -> str:
        if len(text) <= max_chars:
            return text
        return text[: max_chars - len(_TRUNCATED)] + _TRUNCATED

    return StoredTurn(cut(turn.question), cut(turn.answer), turn.agent, turn.created)


@runtime_checkable
class SessionStore(Protocol):
    """Conversation history per ``(owner, session id)``.

    Contract: ``read`` returns at most ``limits.max_turns`` turns, oldest first (empty for an
    unknown or expired session); ``append`` adds one turn, keeps the newest ``max_turns`` and
    renews the time to live; ``forget`` deletes the session and says whether it existed.
    Failures raise :class:`~genesis.errors.SessionError`.
    """

    @property
    def limits(self) -> SessionLimits: ...

    async def read(self, owner: str, session_id: str) -> SessionView: ...

    async def append(self, owner: str, session_id: str, turn: StoredTurn) -> None: ...

    async def forget(self, owner: str, session_id: str) -> bool: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class InProcessSessionStore:
    """Sessions in this process: at most ``max_sessions`` (least recently used go first),
    each at most ``max_turns`` turns, dropped ``ttl_s`` after their last turn."""

    def __init__(
        self,
        limits: SessionLimits | None = None,
        *,
        max_sessions: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = limits or SessionLimits()
        self._max_sessions = max_sessions
        self._clock = clock
        self._data: OrderedDict[tuple[str, str], tuple[deque[StoredTurn], float]] = OrderedDict()

    @property
    def limits(self) -> SessionLimits:
        return self._limits

    async def read(self, owner: str, session_id: str) -> SessionView:
        entry = self._live((owner, check_session_id(session_id)))
        if entry is None:
            return SessionView([], None)
        turns, expires = entry
        return SessionView(list(turns), max(0.0, expires - self._clock()))

    async def append(self, owner: str, session_id: str, turn: StoredTurn) -> None:
        key = (owner, check_session_id(session_id))
        entry = self._live(key)
        turns = entry[0] if entry else deque(maxlen=self._limits.max_turns)
        turns.append(bounded_turn(turn, self._limits.max_turn_chars))
        self._data[key] = (turns, self._clock() + self._limits.ttl_s)
        self._data.move_to_end(key)
        while len(self._data) > self._max_sessions:
            self._data.popitem(last=False)

    async def forget(self, owner: str, session_id: str) -> bool:
        key = (owner, check_session_id(session_id))
        found = self._live(key) is not None
        self._data.pop(key, None)
        return found

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._data.clear()

    def _live(self, key: tuple[str, str]) -> tuple[deque[StoredTurn], float] | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry
