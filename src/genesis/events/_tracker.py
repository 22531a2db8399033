"""Cost and event tracking of one process: the price table and the background recorder."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from genesis.config import Settings
from genesis.events._model import EventStore, RequestEvent
from genesis.events._pricing import Cost, PriceTable
from genesis.events._recorder import EventRecorder
from genesis.observability import record_cost, record_queue, record_queue_dropped

QUEUE_NAME = "events"  # the ``queue`` label of genesis_queue_depth / genesis_queue_dropped


class Tracker:
    """Prices requests and records their events off the request path.

    :meth:`record` never blocks; the database opens on the first event (or the first query)
    on a background thread. :meth:`aclose` writes everything queued before returning.
    """

    def __init__(self, prices: PriceTable, recorder: EventRecorder) -> None:
        self.prices = prices
        self.recorder = recorder

    @classmethod
    def from_settings(cls, settings: Settings) -> Tracker:
        store = settings.store
        recorder = EventRecorder(
            functools.partial(_open_event_store, settings),
            queue_max=store.queue_max,
            batch_max=store.batch_max,
            flush_interval_s=store.flush_interval_s,
            on_dropped=lambda n: record_queue_dropped(QUEUE_NAME, n),
            on_depth=lambda depth: record_queue(QUEUE_NAME, depth),
        )
        return cls(PriceTable(settings.pricing), recorder)

    def cost(self, model: str, prompt_tokens: int, cached_tokens: int, completion: int) -> Cost:
        return self.prices.cost(model, prompt_tokens, cached_tokens, completion)

    def record(self, event: RequestEvent) -> bool:
        """Queue the event (False when the queue was full: counted, not written)."""
        accepted = self.recorder.record(event)
        if accepted:
            record_cost(event.agent, event.model, event.cost_usd)
        return accepted

    async def store(self) -> EventStore:
        """The event store, opened off the event loop."""
        return await asyncio.to_thread(self.recorder.store)

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait (off the loop) until every event queued so far is in the store."""
        return await asyncio.to_thread(self.recorder.flush, timeout_s)

    def stats(self) -> dict[str, Any]:
        return {**self.recorder.stats().as_dict(), "unpriced_models": dict(self.prices.unpriced)}

    async def aclose(self) -> None:
        await asyncio.to_thread(self.recorder.close)


def _open_event_store(settings: Settings) -> EventStore:
    """Imports SQLAlchemy's event tables only when the store is first opened (on the
    recorder's thread): a CLI call that records nothing does not pay for them."""
    from genesis.events._sql import open_event_store

    return open_event_store(settings)
