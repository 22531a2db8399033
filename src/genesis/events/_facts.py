"""Facts about the request being served that are learnt deep in the call stack (a model
fallback inside the registry) and needed where its event is built (the server).

The server opens a mutable :class:`RequestFacts` per request in a context variable; tasks
the request spawns copy the context, so they mutate the same object and nothing is lost.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass(slots=True)
class RequestFacts:
    fallback_reason: str | None = None  # set when the baseline model answered instead


_facts: ContextVar[RequestFacts | None] = ContextVar("genesis_request_facts", default=None)


def begin_request_facts() -> tuple[RequestFacts, Token[RequestFacts | None]]:
    facts = RequestFacts()
    return facts, _facts.set(facts)


def end_request_facts(token: Token[RequestFacts | None]) -> None:
    _facts.reset(token)


def current_request_facts() -> RequestFacts | None:
    return _facts.get()


def note_fallback(agent: str, from_model: str, to_model: str, reason: str) -> None:
    """A model registry's fallback hook: remembers the reason on the current request."""
    del agent, from_model, to_model
    facts = _facts.get()
    if facts is not None:
        facts.fallback_reason = reason
