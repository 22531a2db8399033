"""Metrics (Prometheus) and per-stage timings."""

from genesis.observability._answers import record_answer_outcome
from genesis.observability._loop import LoopLagMonitor
from genesis.observability._metrics import (
    LOOP_LAG_BUCKETS_MS,
    MULTIPROC_ENV,
    disable_metrics,
    enable_metrics,
    forget_this_process,
    metrics_enabled,
    record_breaker_opened,
    record_cache_lookups,
    record_fallback,
    record_loop_lag,
    record_prompt_tokens,
    record_request,
    record_stages,
    render_metrics,
)
from genesis.observability._timing import StageTimer

__all__ = [
    "LOOP_LAG_BUCKETS_MS",
    "MULTIPROC_ENV",
    "LoopLagMonitor",
    "StageTimer",
    "disable_metrics",
    "enable_metrics",
    "forget_this_process",
    "metrics_enabled",
    "record_answer_outcome",
    "record_breaker_opened",
    "record_cache_lookups",
    "record_fallback",
    "record_loop_lag",
    "record_prompt_tokens",
    "record_request",
    "record_stages",
    "render_metrics",
]
