"""Optional OpenTelemetry traces: one span per request, a child span per stage.

Off by default. :func:`enable_tracing` (the server calls it when
``observability.otlp_endpoint`` is set) is the only place that imports OpenTelemetry (the
``otel`` extra), so with tracing off nothing is imported and :func:`record_trace` is one
``None`` check. Stage spans are laid end to end from the measured stage durations, in the
order the stages ran (a request's stages are sequential); the time no stage accounts for is
the request span's ``genesis.other_ms`` attribute. Spans are exported in batches by the SDK's
background thread (OTLP over HTTP), never on the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

logger = logging.getLogger(__name__)

_provider: TracerProvider | None = None
_tracer: Tracer | None = None
_TRACES_PATH = "/v1/traces"


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector's base URL (``http://collector:4318``)."""
    base = endpoint.rstrip("/")
    return base if base.endswith(_TRACES_PATH) else base + _TRACES_PATH


def enable_tracing(endpoint: str, service_name: str = "genesis", sample_ratio: float = 1.0) -> None:
    """Export spans of ``sample_ratio`` of the requests to the OTLP/HTTP ``endpoint``
    (idempotent). An unsampled request's spans are not recorded (cheap)."""
    global _provider, _tracer
    if _provider is not None:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint))))
    _provider, _tracer = provider, provider.get_tracer("genesis")
    logger.info("tracing: OTLP/HTTP spans to %s", traces_url(endpoint))


def tracing_enabled() -> bool:
    return _tracer is not None


def shutdown_tracing() -> None:
    """Export what is queued and stop (blocking: call it off the event loop)."""
    global _provider, _tracer
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def record_trace(
    name: str,
    start_ns: int,
    end_ns: int,
    stages_ms: Mapping[str, float],
    *,
    agent: str,
    model: str,
    outcome: str,
) -> None:
    """One finished request: its span from ``start_ns`` to ``end_ns`` (``time.time_ns``)
    and a span per stage (``stages_ms``, in the order run; a ``total`` entry is skipped).
    ``agent`` and ``model`` must already be label-safe (configured names)."""
    tracer = _tracer
    if tracer is None:
        return
    from opentelemetry import trace

    attributes = {"genesis.agent": agent, "genesis.model": model, "genesis.outcome": outcome}
    span = tracer.start_span(name, start_time=start_ns, attributes=attributes)
    if not span.is_recording():
        return  # not sampled: its stages would not be either
    context = trace.set_span_in_context(span)
    at = start_ns
    for stage, ms in stages_ms.items():
        if stage == "total":
            continue
        duration = int(ms * 1e6)
        child = tracer.start_span(stage, context=context, start_time=at)
        child.end(end_time=at + duration)
        at += duration
    span.set_attribute("genesis.other_ms", max(end_ns - at, 0) / 1e6)
    if outcome != "ok":
        span.set_status(trace.Status(trace.StatusCode.ERROR, outcome))
    span.end(end_time=end_ns)


def record_request_trace(
    pipeline_ms: Mapping[str, float], *, begin_ns: int, agent: str, model: str, outcome: str
) -> None:
    """The trace of the request being served, as its answer is ready: the stages its
    waterfall has timed so far (auth, session read, tracking) and the pipeline's (route,
    embed, retrieve, token cache, assemble, generate), from the waterfall's start
    (``begin_ns`` outside a request) to now. Stages after the answer (session write,
    serialization) are not in it."""
    if _tracer is None:
        return
    from genesis.observability._waterfall import STAGE_ORDER, current_waterfall

    waterfall = current_waterfall()
    stages = dict(waterfall.stages) if waterfall is not None else {}
    for name, ms in pipeline_ms.items():
        if name != "total":
            stages[name] = stages.get(name, 0.0) + ms
    # Laid end to end in the order they run (tracking, timed first here, runs last).
    rank = {name: i for i, name in enumerate(STAGE_ORDER)}
    stages = dict(sorted(stages.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    now_ns = time.time_ns()
    if waterfall is not None:
        begin_ns = now_ns - int((time.perf_counter() - waterfall.start) * 1e9)
    record_trace(
        "genesis.request", begin_ns, now_ns, stages, agent=agent, model=model, outcome=outcome
    )
