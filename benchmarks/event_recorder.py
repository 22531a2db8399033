"""What tracking costs a request: queueing an event vs writing it to the store inline.

    python benchmarks/event_recorder.py --json out.json [--events 5000] [--url sqlite:///...]

In one run, on the same store (SQLite in a temporary folder unless --url is given):
``enqueue_us`` is the median time of :meth:`EventRecorder.record` (what a request pays);
``inline_write_us`` the median time of ``store.write([event])`` (what it would pay writing
itself, one transaction per request); ``ratio`` = inline / enqueue. ``drain_events_per_s``
is how fast the background thread empties a full queue of ``--events`` in batches, and
``close_ms`` how long the final flush of a shutdown took. Writes the dict as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from genesis.events import EventRecorder, open_event_store
from genesis.testing.event_store_contract import event


def _median_us(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e6, 2)


def measure(url: str, n: int) -> dict[str, float | int | str]:
    store = open_event_store(url)
    inline = []
    for _ in range(min(n, 2000)):
        e = event()
        began = time.perf_counter()
        store.write([e])
        inline.append(time.perf_counter() - began)
    store.close()
    # A long interval: the queue fills while we time record(), then close() drains it.
    recorder = EventRecorder(
        lambda: open_event_store(url), queue_max=n + 1, batch_max=500, flush_interval_s=60
    )
    recorder.store()  # opened (and migrated) before timing, as the server does at start
    enqueue = []
    for _ in range(n):
        e = event()
        began = time.perf_counter()
        recorder.record(e)
        enqueue.append(time.perf_counter() - began)
    began = time.perf_counter()
    recorder.close()
    close_s = time.perf_counter() - began
    stats = recorder.stats()
    return {
        "events": n,
        "store": url.split(":", 1)[0],
        "enqueue_us": _median_us(enqueue),
        "inline_write_us": _median_us(inline),
        "ratio": round(statistics.median(inline) / statistics.median(enqueue), 1),
        "drain_events_per_s": round(stats.written / close_s),
        "close_ms": round(close_s * 1000, 1),
        "written": stats.written,
        "dropped": stats.dropped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.url or f"sqlite:///{Path(folder) / 'genesis.db'}"
        result = measure(url, args.events)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
