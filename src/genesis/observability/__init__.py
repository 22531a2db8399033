"""Metrics (Prometheus) and per-stage timings."""

from genesis.observability._metrics import (
    disable_metrics,
    enable_metrics,
    metrics_enabled,
    record_cache_lookups,
    record_fallback,
    record_prompt_tokens,
    record_request,
    record_stages,
    render_metrics,
)
from genesis.observability._timing import StageTimer

__all__ = [
    "StageTimer",
    "disable_metrics",
    "enable_metrics",
    "metrics_enabled",
    "record_cache_lookups",
    "record_fallback",
    "record_prompt_tokens",
    "record_request",
    "record_stages",
    "render_metrics",
]
