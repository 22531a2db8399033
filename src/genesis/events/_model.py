"""One event per request: what the cost tracker, usage reports and rollout statistics read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Outcome = Literal["ok", "error", "abstained"]
Variant = Literal["finetuned", "baseline"]
UnitKind = Literal["user", "session", "request"]
# What usage can be grouped by; ``day`` is the UTC date of the event (YYYY-MM-DD).
UsageGroup = Literal["agent", "model", "session_id", "day", "variant"]


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """What one request did and cost. ``ts`` is Unix seconds (UTC); ``cost_usd`` comes from
    the price table in configuration (0.0 for the offline extractive backend)."""

    ts: float
    request_id: str
    agent: str
    model: str
    outcome: Outcome
    latency_ms: float
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the token cache (not tokenized now)
    completion_tokens: int = 0
    cost_usd: float = 0.0
    session_id: str | None = None
    key_id: str | None = None
    experiment: str | None = None
    variant: Variant | None = None
    unit_kind: UnitKind | None = None
    fallback: bool = False
    fallback_reason: str | None = None
    cache_l1: int = 0  # chunk lookups served by the in-process tier
    cache_l2: int = 0  # ... by Redis (or the store's shared tier)
    cache_miss: int = 0  # ... tokenized for this request
    abstained: bool = False
    error_type: str | None = None


@dataclass(frozen=True, slots=True)
class Feedback:
    request_id: str
    score: float
    comment: str | None
    ts: float


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Totals of one group of events; ``group`` maps each grouping column to its value
    (empty when usage was not grouped)."""

    group: dict[str, str | None]
    requests: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost_usd: float


class EventStore(Protocol):
    """Where events land. Contract (``genesis.testing.event_store_contract``):

    - ``write`` stores a batch atomically; writing a request id twice keeps the first.
    - ``events`` returns stored events with ``since <= ts < until``, oldest first, filtered by
      each argument that is not None.
    - ``add_feedback`` attaches a score to a stored request id (False when the id is unknown);
      the latest feedback for an id wins.
    - ``usage`` sums requests, tokens and cost over the events the filters select
      (``key_id``: only that API key's requests)
      (``since <= ts < until``), one row per distinct combination of the ``by`` columns
      (ordered by them; one row overall when ``by`` is empty and anything matched, none
      otherwise); an unknown group name is a ValueError.
    - Events survive closing and reopening the store on the same database.
    - Every call blocks: callers run it off the event loop.
    """

    def write(self, events: Sequence[RequestEvent]) -> None: ...

    def events(
        self,
        *,
        agent: str | None = None,
        session_id: str | None = None,
        experiment: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[RequestEvent]: ...

    def usage(
        self,
        *,
        by: Sequence[UsageGroup] = (),
        agent: str | None = None,
        session_id: str | None = None,
        key_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[UsageRow]: ...

    def add_feedback(self, request_id: str, score: float, comment: str | None = None) -> bool: ...

    def feedback(self, request_ids: Sequence[str]) -> dict[str, Feedback]: ...

    def close(self) -> None: ...
