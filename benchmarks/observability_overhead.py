"""What recording one request's metrics and trace costs, with each switched off and on.

    python benchmarks/observability_overhead.py --json out.json [--requests N] [--rounds R]

Per request, the calls the server makes after an answer: ``record_request``,
``record_tokens``, ``record_cost``, ``record_stages`` (11 stages), ``record_cache_lookups``
(5 chunks) and, when tracing is on, ``record_trace`` (a request span and 11 stage spans,
queued for the SDK's background exporter, which sends them to a local OTLP/HTTP sink that
answers 200). The modes are measured in rounds that alternate (off, metrics, metrics +
tracing, ...) so that a load change on this shared machine weighs on all of them; the median of
the rounds is reported as microseconds per request, with ratios. A fourth mode traces 10% of
the requests (``observability.trace_sample_ratio: 0.1``). The SDK's queue holds 2048 spans:
past it, spans are dropped (it logs so), as a busy server would. Writes
``{"us_per_request": {...}, "ratio_metrics_vs_off", "ratio_tracing_vs_metrics", ...}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from genesis.observability import (
    disable_metrics,
    enable_metrics,
    enable_tracing,
    record_cache_lookups,
    record_cost,
    record_request,
    record_stages,
    record_tokens,
    record_trace,
    shutdown_tracing,
    tracing_enabled,
)

STAGES = {
    "auth": 0.05, "route": 11.2, "session_read": 0.2, "embed": 0.3, "retrieve": 0.9,
    "token_cache": 0.4, "assemble": 0.6, "generate": 220.0, "session_write": 0.2,
    "tracking": 0.05, "serialize": 0.3,
}  # fmt: skip
TIERS = ["l1", "l1", "l2", "l1", "miss"]


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def one_request() -> None:
    """The server's per-request recording (see server/_app.py ``_answer``)."""
    begin_ns = time.time_ns()
    record_request("support", "open-mistral-7b", None, "ok", 0.234)
    record_tokens("support", "open-mistral-7b", 1800, 1500, 120)
    record_cost("support", "open-mistral-7b", 0.00042)
    record_stages(STAGES)
    record_cache_lookups(TIERS)
    if tracing_enabled():
        record_trace(
            "genesis.request",
            begin_ns,
            begin_ns + 240_000_000,
            STAGES,
            agent="support",
            model="open-mistral-7b",
            outcome="ok",
        )


def timed(n: int, setup: Callable[[], None], teardown: Callable[[], None]) -> float:
    setup()
    try:
        began = time.perf_counter()
        for _ in range(n):
            one_request()
        return (time.perf_counter() - began) / n * 1e6
    finally:
        teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"
    agents, models = {"agents": ["support"]}, {"models": ["open-mistral-7b"]}

    def metrics_on() -> None:
        enable_metrics(**agents, **models)

    def tracing_on(ratio: float) -> Callable[[], None]:
        def setup() -> None:
            metrics_on()
            enable_tracing(endpoint, "genesis-bench", ratio)

        return setup

    def tracing_off() -> None:
        shutdown_tracing()  # exports what is queued (outside the timed loop)
        disable_metrics()

    modes: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
        "off": (lambda: None, lambda: None),
        "metrics": (metrics_on, disable_metrics),
        "metrics_tracing": (tracing_on(1.0), tracing_off),
        "metrics_tracing_10pct": (tracing_on(0.1), tracing_off),
    }
    samples: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.rounds):
        for name, (setup, teardown) in modes.items():
            samples[name].append(timed(args.requests, setup, teardown))
    sink.shutdown()
    us = {name: round(statistics.median(v), 3) for name, v in samples.items()}
    out: dict[str, Any] = {
        "us_per_request": us,
        "ratio_metrics_vs_off": round(us["metrics"] / us["off"], 1),
        "ratio_tracing_vs_metrics": round(us["metrics_tracing"] / us["metrics"], 2),
        "ratio_tracing_10pct_vs_metrics": round(us["metrics_tracing_10pct"] / us["metrics"], 2),
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "samples_us": {k: [round(x, 3) for x in v] for k, v in samples.items()},
        "python": platform.python_version(),
    }
    text = json.dumps(out, indent=2)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
