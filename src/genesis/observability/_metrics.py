"""The one recorder: the only module that imports prometheus_client.

Everything else calls the small ``record_*`` functions, which are no-ops until
:func:`enable_metrics` is called (the server does it in its lifespan; the CLI does not).

Several worker processes (``genesis serve --workers N``) share their metrics through
prometheus_client's multiprocess mode: ``serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
folder before the workers start, every process writes its values there, and
:func:`render_metrics` merges the folder, so ``/metrics`` from any worker shows the sum.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Imported when metrics are enabled (the server), not by every CLI call: ~80 ms here.
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_MS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
# Fine at the low end: the target for an event-loop stall is 5 ms at p99.
LOOP_LAG_BUCKETS_MS = (0.5, 1, 2, 3, 5, 10, 20, 50, 100, 250, 500, 1000)
# prometheus_client's own switch, read once when it is imported (values.ValueClass).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass
class _Metrics:
    registry: CollectorRegistry
    requests: Counter
    request_ms: Histogram
    stage_ms: Histogram
    cache_lookups: Counter
    prompt_tokens: Counter
    fallbacks: Counter
    loop_lag_ms: Histogram
    loop_lag_max_ms: Gauge
    breaker_opened: Counter
    process_up: Gauge


_metrics: _Metrics | None = None


def enable_metrics() -> CollectorRegistry:
    """Create the metrics (once) in a private registry and start recording."""
    global _metrics
    if _metrics is None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        reg = CollectorRegistry()
        _metrics = _Metrics(
            registry=reg,
            requests=Counter(
                "genesis_requests", "Agent requests", ["agent", "backend", "status"], registry=reg
            ),
            request_ms=Histogram(
                "genesis_request_ms",
                "Request wall time (ms)",
                ["agent"],
                buckets=_MS_BUCKETS,
                registry=reg,
            ),
            stage_ms=Histogram(
                "genesis_stage_ms",
                "Per-stage time (ms)",
                ["stage"],
                buckets=_MS_BUCKETS,
                registry=reg,
            ),
            cache_lookups=Counter(
                "genesis_token_cache_lookups", "Chunk lookups by tier", ["tier"], registry=reg
            ),
            prompt_tokens=Counter(
                "genesis_prompt_tokens", "Prompt tokens sent", ["agent", "source"], registry=reg
            ),
            fallbacks=Counter(
                "genesis_model_fallbacks",
                "Fallbacks to the baseline model",
                ["agent", "reason"],
                registry=reg,
            ),
            loop_lag_ms=Histogram(
                "genesis_event_loop_lag_ms",
                "How late the event loop woke from a short sleep (ms)",
                buckets=LOOP_LAG_BUCKETS_MS,
                registry=reg,
            ),
            # The largest stall of each live worker over the monitor's last window.
            loop_lag_max_ms=Gauge(
                "genesis_event_loop_lag_max_ms",
                "Longest event-loop stall in the recent window (ms)",
                registry=reg,
                multiprocess_mode="livemax",
            ),
            # One series per live worker (a ``pid`` label) under `serve --workers N`.
            process_up=Gauge(
                "genesis_process_up",
                "1 for each live server process",
                registry=reg,
                multiprocess_mode="liveall",
            ),
            breaker_opened=Counter(
                "genesis_breaker_opened",
                "Times a circuit breaker opened",
                ["circuit"],
                registry=reg,
            ),
        )
        _metrics.process_up.set(1)
    return _metrics.registry


def disable_metrics() -> None:
    global _metrics
    _metrics = None


def metrics_enabled() -> bool:
    return _metrics is not None


def render_metrics() -> tuple[bytes, str]:
    """Prometheus text exposition and its content type (empty when metrics are off)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    from prometheus_client.multiprocess import MultiProcessCollector

    if _metrics is None:
        return b"", CONTENT_TYPE_LATEST
    folder = os.environ.get(MULTIPROC_ENV)
    if not folder:
        return generate_latest(_metrics.registry), CONTENT_TYPE_LATEST
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=folder)  # type: ignore[no-untyped-call]
    return generate_latest(merged), CONTENT_TYPE_LATEST


def forget_this_process() -> None:
    """Drop this process's live gauges from the shared metrics folder (a worker that exits:
    its ``genesis_process_up`` and lag maximum must not outlive it). No-op in one process."""
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(os.getpid(), folder)  # type: ignore[no-untyped-call]


def record_request(agent: str, backend: str, status: str, total_ms: float) -> None:
    if _metrics is not None:
        _metrics.requests.labels(agent, backend, status).inc()
        _metrics.request_ms.labels(agent).observe(total_ms)


def record_stages(stages: dict[str, float]) -> None:
    if _metrics is not None:
        for name, ms in stages.items():
            if name != "total":
                _metrics.stage_ms.labels(name).observe(ms)


def record_cache_lookups(tiers: list[str]) -> None:
    if _metrics is not None:
        for tier in tiers:
            _metrics.cache_lookups.labels(tier).inc()


def record_prompt_tokens(agent: str, total: int, cached: int) -> None:
    if _metrics is not None:
        _metrics.prompt_tokens.labels(agent, "cache").inc(cached)
        _metrics.prompt_tokens.labels(agent, "fresh").inc(max(total - cached, 0))


def record_fallback(agent: str, from_model: str, to_model: str, reason: str) -> None:
    # Model names stay out of labels: fine-tuned ids are unbounded and may be sensitive.
    del from_model, to_model
    if _metrics is not None:
        _metrics.fallbacks.labels(agent, reason).inc()


def record_loop_lag(lag_ms: float) -> None:
    if _metrics is not None:
        _metrics.loop_lag_ms.observe(lag_ms)


def record_loop_lag_max(max_ms: float) -> None:
    if _metrics is not None:
        _metrics.loop_lag_max_ms.set(max_ms)


def record_breaker_opened(name: str) -> None:
    """A circuit opened; per-model circuits share one label (model ids stay out of labels)."""
    if _metrics is not None:
        kind = "replica" if name.startswith("replica-") else "model"
        _metrics.breaker_opened.labels(name if name.startswith("token-cache") else kind).inc()
