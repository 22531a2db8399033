"""The background recorder: never blocks, counts what a full queue refuses, loses nothing
on close, and batches its writes."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from genesis.events import EventRecorder, RequestEvent, open_event_store
from genesis.observability import disable_metrics, enable_metrics, render_metrics
from genesis.testing.event_store_contract import event


class GatedStore:
    """An in-memory store whose writes wait for a gate (a slow database)."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.batches: list[list[RequestEvent]] = []
        self.closed = False

    def write(self, events: Sequence[RequestEvent]) -> None:
        if self.gate is not None:
            self.gate.wait(30)
        self.batches.append(list(events))

    def close(self) -> None:
        self.closed = True

    @property
    def written(self) -> list[RequestEvent]:
        return [e for batch in self.batches for e in batch]


def test_a_full_queue_refuses_and_counts() -> None:
    store = GatedStore()
    dropped: list[int] = []
    recorder = EventRecorder(
        lambda: store,  # type: ignore[arg-type,return-value]
        queue_max=3,
        autostart=False,
        on_dropped=dropped.append,
    )
    events = [event() for _ in range(5)]
    accepted = [recorder.record(e) for e in events]
    assert accepted == [True, True, True, False, False]
    assert recorder.stats().dropped == 2 and dropped == [1, 1]
    recorder.start()
    recorder.close()
    assert store.written == events[:3]
    assert store.closed


def test_dropped_events_are_a_metric() -> None:
    enable_metrics()
    try:
        from genesis.events._tracker import QUEUE_NAME
        from genesis.observability import record_queue_dropped

        recorder = EventRecorder(
            GatedStore,  # type: ignore[arg-type]
            queue_max=1,
            autostart=False,
            on_dropped=lambda n: record_queue_dropped(QUEUE_NAME, n),
        )
        for _ in range(4):
            recorder.record(event())
        text = render_metrics()[0].decode()
        assert 'genesis_queue_dropped_total{queue="events"} 3.0' in text
        recorder.close()
    finally:
        disable_metrics()


def test_record_never_waits_for_a_slow_store() -> None:
    gate = threading.Event()
    store = GatedStore(gate)
    recorder = EventRecorder(
        lambda: store,  # type: ignore[arg-type,return-value]
        queue_max=100,
        batch_max=1,
        flush_interval_s=0.01,
    )
    # The store is stuck: recording still returns at once (a blocking put would wait for
    # the gate and accept all 150); at most one event is out of the queue, in the writer.
    results = [recorder.record(event()) for _ in range(150)]
    assert results.count(False) >= 49
    gate.set()
    recorder.close()
    assert len(store.written) == results.count(True)
    assert recorder.stats().written == results.count(True)


def test_close_writes_everything_queued_from_many_threads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    # A long interval and big batches: without the final drain most events stay queued.
    recorder = EventRecorder(
        lambda: open_event_store(url), queue_max=100_000, batch_max=10_000, flush_interval_s=30
    )
    accepted: list[str] = []
    lock = threading.Lock()

    def produce() -> None:
        for _ in range(500):
            e = event()
            if recorder.record(e):
                with lock:
                    accepted.append(e.request_id)

    threads = [threading.Thread(target=produce) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recorder.close()
    assert len(accepted) == 4000 and recorder.stats().dropped == 0
    store = open_event_store(url)
    assert sorted(e.request_id for e in store.events()) == sorted(accepted)
    store.close()
    assert recorder.record(event()) is False  # closed: refused and counted
    assert recorder.stats().dropped == 1


def test_batches_are_bounded() -> None:
    store = GatedStore()
    recorder = EventRecorder(
        lambda: store,  # type: ignore[arg-type,return-value]
        batch_max=7,
        flush_interval_s=0.05,
        autostart=False,
    )
    for _ in range(30):
        recorder.record(event())
    recorder.start()
    recorder.close()
    assert len(store.written) == 30
    assert max(len(b) for b in store.batches) <= 7


def test_flush_waits_for_queued_events() -> None:
    store = GatedStore()
    recorder = EventRecorder(lambda: store, flush_interval_s=0.05)  # type: ignore[arg-type,return-value]
    recorder.record(event())
    assert recorder.flush(timeout_s=30) is True
    assert len(store.written) == 1
    recorder.close()


def test_a_failing_store_is_retried_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(GatedStore):
        def write(self, events: Sequence[RequestEvent]) -> None:
            raise OSError("disk full")

    recorder = EventRecorder(Broken, write_attempts=2, autostart=False)  # type: ignore[arg-type]
    recorder.record(event())
    recorder.close()
    assert recorder.stats().failed == 1
    assert "1 events lost" in caplog.text


def test_a_flush_writes_what_is_queued_without_waiting_for_the_batch_interval() -> None:
    store = GatedStore()
    # An interval far longer than the flush may wait: only a flush that hurries the writer
    # can return True (read-your-writes for /v1/usage and the rollout status).
    recorder = EventRecorder(lambda: store, flush_interval_s=60.0)  # type: ignore[arg-type,return-value]
    events = [event() for _ in range(3)]
    for e in events:
        recorder.record(e)
    assert recorder.flush(timeout_s=10.0)
    assert store.written == events
    recorder.record(event())
    assert recorder.flush(timeout_s=10.0)  # a second flush hurries the next batch too
    assert len(store.written) == 4
    recorder.close()
