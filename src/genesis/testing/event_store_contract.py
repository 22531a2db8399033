"""The `EventStore` contract as a reusable pytest suite.

A backend's tests subclass `EventStoreContract` and provide ``open_store``: a fixture that
returns a callable opening a store on ONE database for the whole test (calling it again
reopens the same data, which is how "events survive a restart" is checked)::

    class TestMyStore(EventStoreContract):
        @pytest.fixture
        def open_store(self, tmp_path):
            return lambda: MyStore(tmp_path / "events.db")
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from genesis.events import EventStore, RequestEvent

# 2026-11-30 23:59:00 UTC, one minute before a UTC day boundary.
T0 = datetime(2026, 11, 30, 23, 59, tzinfo=UTC).timestamp()


def event(**fields: object) -> RequestEvent:
    """A complete event with sensible defaults; any field may be given."""
    base = RequestEvent(
        ts=T0,
        request_id=uuid.uuid4().hex,
        agent="support",
        model="m-base",
        outcome="ok",
        latency_ms=12.5,
        prompt_tokens=100,
        cached_tokens=60,
        completion_tokens=20,
        cost_usd=0.001,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


class EventStoreContract:
    """Behaviour every `EventStore` must show. Subclasses supply ``open_store``."""

    @pytest.fixture
    def store(self, open_store: Callable[[], EventStore]) -> Iterator[EventStore]:
        store = open_store()
        yield store
        store.close()

    def test_write_then_read_every_field(self, store: EventStore) -> None:
        full = event(
            session_id="s-1",
            key_id="app",
            experiment="exp-1",
            variant="finetuned",
            unit_kind="session",
            fallback=True,
            fallback_reason="timeout",
            cache_l1=3,
            cache_l2=1,
            cache_miss=1,
            abstained=True,
            error_type="LLMTimeoutError",
            cost_usd=0.0123456789,
            latency_ms=1234.567,
        )
        store.write([full])
        assert store.events() == [full]

    def test_a_batch_is_written_all_or_nothing(self, store: EventStore) -> None:
        broken = replace(event(), agent=None)  # type: ignore[arg-type]
        with pytest.raises(Exception):  # noqa: B017 - each backend raises its own driver error
            store.write([event(), broken])
        assert store.events() == []

    def test_events_come_oldest_first(self, store: EventStore) -> None:
        late, early, middle = event(ts=T0 + 2), event(ts=T0), event(ts=T0 + 1)
        store.write([late, early])
        store.write([middle])
        assert store.events() == [early, middle, late]

    def test_writing_nothing_is_a_no_op(self, store: EventStore) -> None:
        store.write([])
        assert store.events() == []

    def test_a_request_id_written_twice_keeps_the_first(self, store: EventStore) -> None:
        first = event(request_id="r-1", agent="support")
        store.write([first, replace(first, agent="qa")])
        store.write([replace(first, agent="documentation")])
        assert store.events() == [first]

    def test_filters_select_events(self, store: EventStore) -> None:
        a = event(ts=T0, agent="support", session_id="s1", experiment="e1")
        b = event(ts=T0 + 10, agent="qa", session_id="s1")
        c = event(ts=T0 + 20, agent="support", session_id="s2", experiment="e1")
        store.write([a, b, c])
        assert store.events(agent="support") == [a, c]
        assert store.events(session_id="s1") == [a, b]
        assert store.events(experiment="e1") == [a, c]
        assert store.events(agent="support", session_id="s2") == [c]
        assert store.events(agent="nobody") == []

    def test_time_window_is_half_open(self, store: EventStore) -> None:
        events = [event(ts=T0 + i) for i in range(4)]
        store.write(events)
        assert store.events(since=T0 + 1, until=T0 + 3) == events[1:3]
        assert store.events(since=T0 + 3) == events[3:]
        assert store.events(until=T0 + 1) == events[:1]

    def test_usage_sums_per_group(self, store: EventStore) -> None:
        store.write(
            [
                event(agent="support", model="m1", prompt_tokens=10, cost_usd=0.25),
                event(agent="support", model="m2", prompt_tokens=20, cost_usd=0.5),
                event(agent="qa", model="m1", prompt_tokens=5, cost_usd=0.125),
            ]
        )
        rows = store.usage(by=["agent"])
        assert [(r.group, r.requests, r.prompt_tokens) for r in rows] == [
            ({"agent": "qa"}, 1, 5),
            ({"agent": "support"}, 2, 30),
        ]
        assert [r.cost_usd for r in rows] == pytest.approx([0.125, 0.75])
        by_both = store.usage(by=["agent", "model"])
        assert [r.group for r in by_both] == [
            {"agent": "qa", "model": "m1"},
            {"agent": "support", "model": "m1"},
            {"agent": "support", "model": "m2"},
        ]

    def test_usage_totals_match_the_events(self, store: EventStore) -> None:
        events = [
            event(prompt_tokens=i, cached_tokens=i // 2, completion_tokens=3 * i, cost_usd=i / 7)
            for i in range(1, 30)
        ]
        store.write(events)
        [total] = store.usage()
        assert total.group == {}
        assert total.requests == len(events)
        assert total.prompt_tokens == sum(e.prompt_tokens for e in events)
        assert total.cached_tokens == sum(e.cached_tokens for e in events)
        assert total.completion_tokens == sum(e.completion_tokens for e in events)
        assert total.cost_usd == pytest.approx(sum(e.cost_usd for e in events))

    def test_usage_by_day_uses_the_utc_date(self, store: EventStore) -> None:
        store.write([event(ts=T0), event(ts=T0 + 30), event(ts=T0 + 90)])
        rows = store.usage(by=["day"])
        assert [(r.group["day"], r.requests) for r in rows] == [
            ("2026-11-30", 2),
            ("2026-12-01", 1),
        ]

    def test_usage_by_session_and_variant_keeps_none(self, store: EventStore) -> None:
        store.write(
            [
                event(session_id="s1", variant="baseline"),
                event(session_id="s1", variant="finetuned"),
                event(session_id=None, variant=None),
            ]
        )
        groups = [r.group for r in store.usage(by=["session_id", "variant"])]
        assert {"session_id": None, "variant": None} in groups
        assert {"session_id": "s1", "variant": "finetuned"} in groups
        assert len(groups) == 3

    def test_usage_filters(self, store: EventStore) -> None:
        store.write(
            [
                event(ts=T0, agent="support", session_id="s1"),
                event(ts=T0 + 5, agent="support", session_id="s2"),
                event(ts=T0 + 9, agent="qa", session_id="s1", key_id="app"),
            ]
        )
        assert store.usage(key_id="app")[0].requests == 1
        assert store.usage(agent="support")[0].requests == 2
        assert store.usage(session_id="s1")[0].requests == 2
        assert store.usage(since=T0 + 5)[0].requests == 2
        assert store.usage(since=T0 + 1, until=T0 + 6)[0].requests == 1
        assert store.usage(agent="nobody") == []

    def test_usage_refuses_an_unknown_group(self, store: EventStore) -> None:
        with pytest.raises(ValueError, match="prompt"):
            store.usage(by=["prompt"])  # type: ignore[list-item]

    def test_feedback_needs_a_stored_request(self, store: EventStore) -> None:
        assert store.add_feedback("missing", 1.0) is False
        assert store.feedback(["missing"]) == {}

    def test_latest_feedback_wins(self, store: EventStore) -> None:
        store.write([event(request_id="r-1"), event(request_id="r-2")])
        assert store.add_feedback("r-1", 0.0, "wrong answer") is True
        assert store.add_feedback("r-1", 1.0) is True
        got = store.feedback(["r-1", "r-2", "r-3"])
        assert list(got) == ["r-1"]
        assert (got["r-1"].score, got["r-1"].comment) == (1.0, None)
        assert got["r-1"].request_id == "r-1"

    def test_events_and_feedback_survive_reopening(
        self, store: EventStore, open_store: Callable[[], EventStore]
    ) -> None:
        stored = [event(ts=T0 + i) for i in range(3)]
        store.write(stored)
        store.add_feedback(stored[0].request_id, 0.5, "ok")
        store.close()
        again = open_store()
        try:
            assert again.events() == stored
            assert again.feedback([stored[0].request_id])[stored[0].request_id].score == 0.5
        finally:
            again.close()

    def test_many_events_in_one_batch(self, store: EventStore) -> None:
        events = [event(ts=T0 + i / 1000) for i in range(2000)]
        store.write(events)
        assert len(store.events()) == 2000
        ids = [e.request_id for e in events]
        store.add_feedback(ids[-1], 1.0)
        assert list(store.feedback(ids)) == [ids[-1]]
