"""Session memory over HTTP: a conversation around one answer, and the session routes.

A request names its session (``session_id`` in the body of ``/v1/ask`` and
``/v1/agents/{agent}/query``; the ``X-Genesis-Session`` header, else ``user``, on
``/v1/chat/completions``). Its turns are read in one round trip before the answer and the new
turn appended in one after it. Sessions are scoped to the caller's API key id (``anonymous``
without keys): the same session id under another key is another session, and
``GET``/``DELETE /v1/sessions/{id}`` see only the caller's own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel

from genesis.errors import UnknownSessionError
from genesis.memory import SESSION_ID_PATTERN, SessionStore, StoredTurn
from genesis.rag import Turn
from genesis.server._auth import principal_of

if TYPE_CHECKING:
    from genesis.app import Genesis

SessionIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=SESSION_ID_PATTERN)]


class SessionTurn(BaseModel):
    question: str
    answer: str
    agent: str
    created: float


class SessionResponse(BaseModel):
    id: str
    turns: list[SessionTurn]
    ttl_s: float | None
    max_turns: int


class SessionDeleted(BaseModel):
    id: str
    deleted: bool


def owner_of(request: Request) -> str:
    """Whose sessions a request may touch: its API key id (``anonymous`` without keys)."""
    principal = principal_of(request)
    return principal.name if principal is not None else "anonymous"


@dataclass(slots=True)
class Conversation:
    """One request's session: the earlier turns it was read with, and the owner to append
    the new turn for. ``Conversation.none()`` stands for a request without a session."""

    store: SessionStore | None
    owner: str
    session_id: str | None
    turns: list[StoredTurn] = field(default_factory=list)

    @classmethod
    def none(cls) -> Conversation:
        return cls(None, "", None)

    @classmethod
    async def open(cls, store: SessionStore, owner: str, session_id: str | None) -> Conversation:
        """Read the session (one round trip); a request without a session id reads nothing."""
        if session_id is None:
            return cls.none()
        view = await store.read(owner, session_id)
        return cls(store, owner, session_id, view.turns)

    @property
    def history(self) -> list[Turn]:
        return [Turn.exchange(t.question, t.answer) for t in self.turns]

    async def record(self, question: str, answer: str, agent: str) -> None:
        """Append the new exchange (one round trip); nothing without a session."""
        if self.store is None or self.session_id is None:
            return
        turn = StoredTurn(question, answer, agent, time.time())
        await self.store.append(self.owner, self.session_id, turn)


def add_session_routes(app: APIRouter, genesis: Genesis) -> None:
    # One route for both methods: a 405 on this path then lists both in ``Allow``.
    @app.api_route(
        "/v1/sessions/{session_id}",
        methods=["GET", "DELETE"],
        response_model=SessionResponse | SessionDeleted,
    )
    async def session(session_id: SessionIdPath, request: Request) -> Any:
        """GET: the turns this key stored under the id (404 when none). DELETE: forget
        them (``deleted`` says whether there were any)."""
        owner = owner_of(request)
        if request.method == "DELETE":
            deleted = await genesis.sessions.forget(owner, session_id)
            return SessionDeleted(id=session_id, deleted=deleted)
        view = await genesis.sessions.read(owner, session_id)
        if not view.turns:
            raise UnknownSessionError(f"no session {session_id!r} for this API key")
        turns = [SessionTurn(**_fields(t)) for t in view.turns]
        limit = genesis.sessions.limits.max_turns
        return SessionResponse(id=session_id, turns=turns, ttl_s=view.ttl_s, max_turns=limit)


def _fields(turn: StoredTurn) -> dict[str, object]:
    return {
        "question": turn.question,
        "answer": turn.answer,
        "agent": turn.agent,
        "created": turn.created,
    }
