"""The one recorder: the only module that imports prometheus_client.

Everything else calls the small ``record_*`` functions, which are no-ops until
:func:`enable_metrics` is called (the server does it in its lifespan; the CLI does not).

Names follow Prometheus conventions: a ``genesis_`` prefix, base units in the name
(``_seconds``, ``_usd``), ``_total`` on counters (prometheus_client appends it). The series
the alerts and the dashboard in ``deploy/`` read:

==========================================  ==========================================
``genesis_requests_total``                  counter {agent, model, variant, outcome}
``genesis_request_duration_seconds``        histogram {agent, model, variant, outcome}
``genesis_tokens_total``                    counter {agent, model, kind}; kind is
                                            ``prompt``, ``cached`` (a part of prompt:
                                            IDs from the token cache) or ``completion``
``genesis_cost_usd_total``                  counter {agent, model}
``genesis_token_cache_lookups_total``       counter {tier, outcome}: every chunk is one
                                            ``l1`` lookup; an L1 miss is one ``l2`` lookup
``genesis_model_fallbacks_total``           counter {agent, reason}
``genesis_breaker_state``                   gauge {circuit}: 0 closed, 1 half-open, 2 open
``genesis_breaker_opened_total``            counter {circuit}
``genesis_redis_operation_duration_seconds`` histogram {op}
``genesis_queue_depth``                     gauge {queue} (summed over live workers)
``genesis_queue_dropped_total``             counter {queue}
``genesis_stage_duration_seconds``          histogram {stage}
``genesis_abstentions_total``               counter {agent}
``genesis_model_calls_saved_total``         counter {agent}
``genesis_event_loop_lag_seconds``          histogram; ``..._max_seconds`` gauge
``genesis_process_up``                      gauge {pid} per live worker
``genesis_rollout_percent``                 gauge {agent}: units on the fine-tuned model
``genesis_rollout_stage``                   gauge {agent}: stage index, -1 off-plan
``genesis_rollout_verdict``                 gauge {agent, verdict}: 1 for the latest
``genesis_cost_budget_usd``                 gauge {period}: ``hour``/``day`` from budgets.*
==========================================  ==========================================

Only configured agent, model and variant names become label values (see
:func:`allow_labels`); anything else is recorded as ``other``, so a client's string can never
grow the number of series.

Several worker processes (``genesis serve --workers N``) share their metrics through
prometheus_client's multiprocess mode: ``serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
folder before the workers start, every process writes its values there, and
:func:`render_metrics` merges the folder, so ``/metrics`` from any worker shows the sum.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Imported when metrics are enabled (the server), not by every CLI call: ~80 ms here.
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Fine at the low end: the target for an event-loop stall is 5 ms at p99.
LOOP_LAG_BUCKETS_MS = (0.5, 1, 2, 3, 5, 10, 20, 50, 100, 250, 500, 1000)
_REQUEST_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_STAGE_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
)  # fmt: skip
_REDIS_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)
# prometheus_client's own switch, read once when it is imported (values.ValueClass).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"
# Values of genesis_breaker_state (a number, so that max() over workers is "the worst").
BREAKER_STATES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
_CACHE_CIRCUIT_PREFIX = "token-cache"


@dataclass
class _Labels:
    """The label values allowed for names that come from configuration or clients."""

    agents: frozenset[str] = frozenset({"auto"})
    models: frozenset[str] = frozenset({"extractive"})
    variants: frozenset[str] = frozenset({"none"})


@dataclass
class _Metrics:
    registry: CollectorRegistry
    requests: Counter
    request_seconds: Histogram
    tokens: Counter
    cost: Counter
    stage_seconds: Histogram
    cache_lookups: Counter
    fallbacks: Counter
    breaker_state: Gauge
    breaker_opened: Counter
    redis_seconds: Histogram
    queue_depth: Gauge
    queue_dropped: Counter
    abstentions: Counter
    saved_calls: Counter
    loop_lag: Histogram
    loop_lag_max: Gauge
    loop_stalled: Counter
    process_up: Gauge
    rollout_percent: Gauge
    rollout_stage: Gauge
    rollout_verdict: Gauge
    budget: Gauge
    # Label children by (metric, values): prometheus_client's labels() validates and locks
    # on every call (~2-5 us each, a dozen per request); the values are bounded (see above).
    children: dict[tuple[int, tuple[str, ...]], Any] = field(default_factory=dict)


_metrics: _Metrics | None = None
_labels = _Labels()


def _build(reg: CollectorRegistry) -> _Metrics:
    from prometheus_client import Counter, Gauge, Histogram

    am = ["agent", "model"]
    amvo = [*am, "variant", "outcome"]
    return _Metrics(
        registry=reg,
        requests=Counter("genesis_requests", "Agent requests", amvo, registry=reg),
        request_seconds=Histogram(
            "genesis_request_duration_seconds",
            "Request wall time",
            amvo,
            buckets=_REQUEST_BUCKETS_S,
            registry=reg,
        ),
        tokens=Counter(
            "genesis_tokens", "Tokens by kind (cached is in prompt)", [*am, "kind"], registry=reg
        ),
        cost=Counter("genesis_cost_usd", "Model cost in US dollars", am, registry=reg),
        stage_seconds=Histogram(
            "genesis_stage_duration_seconds",
            "Per-stage time of a request",
            ["stage"],
            buckets=_STAGE_BUCKETS_S,
            registry=reg,
        ),
        cache_lookups=Counter(
            "genesis_token_cache_lookups",
            "Token-cache chunk lookups by tier and outcome",
            ["tier", "outcome"],
            registry=reg,
        ),
        fallbacks=Counter(
            "genesis_model_fallbacks",
            "Fallbacks from one model to the next",
            ["agent", "reason"],
            registry=reg,
        ),
        # max over live workers: a circuit open in any worker shows as open.
        breaker_state=Gauge(
            "genesis_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ["circuit"],
            registry=reg,
            multiprocess_mode="livemax",
        ),
        breaker_opened=Counter(
            "genesis_breaker_opened", "Times a circuit breaker opened", ["circuit"], registry=reg
        ),
        redis_seconds=Histogram(
            "genesis_redis_operation_duration_seconds",
            "Redis operation latency",
            ["op"],
            buckets=_REDIS_BUCKETS_S,
            registry=reg,
        ),
        queue_depth=Gauge(
            "genesis_queue_depth",
            "Items waiting in a background queue",
            ["queue"],
            registry=reg,
            multiprocess_mode="livesum",
        ),
        queue_dropped=Counter(
            "genesis_queue_dropped", "Items a full queue refused", ["queue"], registry=reg
        ),
        abstentions=Counter(
            "genesis_abstentions", "Requests answered by abstaining", ["agent"], registry=reg
        ),
        saved_calls=Counter(
            "genesis_model_calls_saved",
            "Model calls not made because the agent abstained",
            ["agent"],
            registry=reg,
        ),
        loop_lag=Histogram(
            "genesis_event_loop_lag_seconds",
            "How late the event loop woke from a short sleep",
            buckets=tuple(b / 1000.0 for b in LOOP_LAG_BUCKETS_MS),
            registry=reg,
        ),
        # Where a stalled sample's time went (see _loop.py): the loop thread running
        # (callbacks), waiting for a core (the OS ran something else), or neither (the GIL, a
        # blocking call). Summed over stalled samples only.
        loop_stalled=Counter(
            "genesis_event_loop_stalled_seconds",
            "Time of stalled loop-lag samples, by where the loop thread spent it",
            ["cause"],
            registry=reg,
        ),
        # The largest stall of each live worker over the monitor's last window.
        loop_lag_max=Gauge(
            "genesis_event_loop_lag_max_seconds",
            "Longest event-loop stall in the recent window",
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
        # Rollout state: every worker reads the same database, so the latest value wins.
        rollout_percent=Gauge(
            "genesis_rollout_percent",
            "Percent of units on the fine-tuned model",
            ["agent"],
            registry=reg,
            multiprocess_mode="mostrecent",
        ),
        rollout_stage=Gauge(
            "genesis_rollout_stage",
            "Rollout stage index (-1: not on a configured stage)",
            ["agent"],
            registry=reg,
            multiprocess_mode="mostrecent",
        ),
        rollout_verdict=Gauge(
            "genesis_rollout_verdict",
            "1 for the latest verdict of the rollout gates",
            ["agent", "verdict"],
            registry=reg,
            multiprocess_mode="mostrecent",
        ),
        # From configuration (budgets.*): the cost-burn alerts compare spend against it.
        budget=Gauge(
            "genesis_cost_budget_usd",
            "Configured model-cost budget per period",
            ["period"],
            registry=reg,
            multiprocess_mode="livemax",
        ),
    )


def enable_metrics(
    *,
    agents: Iterable[str] = (),
    models: Iterable[str] = (),
    variants: Iterable[str] = (),
) -> CollectorRegistry:
    """Create the metrics (once) in a private registry and start recording; the names given
    are allowed as label values (see :func:`allow_labels`)."""
    global _metrics
    allow_labels(agents=agents, models=models, variants=variants)
    if _metrics is None:
        from prometheus_client import CollectorRegistry

        _metrics = _build(CollectorRegistry())
        _metrics.process_up.set(1)
    return _metrics.registry


def allow_labels(
    *, agents: Iterable[str] = (), models: Iterable[str] = (), variants: Iterable[str] = ()
) -> None:
    """Add configured names to the label values that are recorded as themselves."""
    global _labels
    _labels = _Labels(
        agents=_labels.agents | frozenset(agents),
        models=_labels.models | frozenset(models),
        variants=_labels.variants | frozenset(variants),
    )


def disable_metrics() -> None:
    global _metrics, _labels
    _metrics = None
    _labels = _Labels()


def metrics_enabled() -> bool:
    return _metrics is not None


def agent_label(agent: str | None) -> str:
    return "auto" if agent is None else agent if agent in _labels.agents else OTHER


def model_label(model: str | None) -> str:
    return model if model is not None and model in _labels.models else OTHER


def variant_label(variant: str | None) -> str:
    return "none" if variant is None else variant if variant in _labels.variants else OTHER


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


def _child(metric: Any, *values: str) -> Any:
    assert _metrics is not None
    key = (id(metric), values)
    child = _metrics.children.get(key)
    if child is None:
        child = _metrics.children[key] = metric.labels(*values)
    return child


def record_budgets(per_hour_usd: float | None, per_day_usd: float | None) -> None:
    """Export the configured cost budgets (a period without one exports nothing, so its
    alert never fires)."""
    if _metrics is not None:
        for period, usd in (("hour", per_hour_usd), ("day", per_day_usd)):
            if usd is not None:
                _child(_metrics.budget, period).set(usd)


# -- requests ----------------------------------------------------------------------------


def record_request(
    agent: str | None, model: str | None, variant: str | None, outcome: str, seconds: float
) -> None:
    """One finished request; ``outcome`` is a short code word (``ok``, ``error``, ...)."""
    if _metrics is not None:
        labels = (agent_label(agent), model_label(model), variant_label(variant), outcome)
        _child(_metrics.requests, *labels).inc()
        _child(_metrics.request_seconds, *labels).observe(seconds)


def record_tokens(
    agent: str | None, model: str | None, prompt: int, cached: int, completion: int
) -> None:
    """Tokens of one request; ``cached`` is the part of ``prompt`` the token cache served."""
    if _metrics is not None:
        a, m = agent_label(agent), model_label(model)
        for kind, n in (("prompt", prompt), ("cached", cached), ("completion", completion)):
            _child(_metrics.tokens, a, m, kind).inc(max(n, 0))


def record_prompt_tokens(agent: str, total: int, cached: int) -> None:
    """Kept for callers of the earlier API: prompt tokens without a model."""
    record_tokens(agent, None, total, cached, 0)


def record_cost(agent: str | None, model: str | None, usd: float) -> None:
    if _metrics is not None and usd > 0:
        _child(_metrics.cost, agent_label(agent), model_label(model)).inc(usd)


def record_stages(stages: Mapping[str, float]) -> None:
    """Per-stage times of one request in milliseconds (a :class:`StageTimer`'s dict; the
    ``total`` entry is the request, not a stage, and is skipped)."""
    if _metrics is not None:
        for name, ms in stages.items():
            if name != "total":
                _child(_metrics.stage_seconds, name).observe(ms / 1000.0)


def record_abstained(agent: str | None, saved_call: bool) -> None:
    """The agent abstained; ``saved_call`` when that spared a model call."""
    if _metrics is not None:
        a = agent_label(agent)
        _child(_metrics.abstentions, a).inc()
        if saved_call:
            _child(_metrics.saved_calls, a).inc()


# -- cache, models, breakers, Redis, queues ----------------------------------------------


def record_cache_lookup(tier: str, hit: bool, n: int = 1) -> None:
    if _metrics is not None and n > 0:
        _child(_metrics.cache_lookups, tier, "hit" if hit else "miss").inc(n)


def record_cache_lookups(tiers: Iterable[str]) -> None:
    """Where each chunk of one lookup was found (``l1``, ``l2`` or ``miss``, as in
    :class:`genesis.cache.CacheLookup`): every chunk is an L1 lookup, an L1 miss an L2 one."""
    if _metrics is None:
        return
    found = list(tiers)
    l1, l2 = found.count("l1"), found.count("l2")
    record_cache_lookup("l1", True, l1)
    record_cache_lookup("l1", False, len(found) - l1)
    record_cache_lookup("l2", True, l2)
    record_cache_lookup("l2", False, len(found) - l1 - l2)


def record_fallback(agent: str, from_model: str, to_model: str, reason: str) -> None:
    # The reason is the series' identity; models are in the request counter's labels.
    del from_model, to_model
    if _metrics is not None:
        _child(_metrics.fallbacks, agent_label(agent), reason).inc()


def _circuit_label(name: str) -> str:
    # Per-model circuits are named by the model id (or "agent:model" where agents share the
    # model): only configured models become labels. Replica circuits are "replica-<index>".
    if name.startswith((_CACHE_CIRCUIT_PREFIX, "replica-")) or name in _labels.models:
        return name
    # "agent:model", split at the first colon: fine-tuned ids have colons of their own.
    agent, _, model = name.partition(":")
    return model_label(model) if agent in _labels.agents else OTHER


def record_breaker_state(name: str, state: str) -> None:
    """A circuit's state now: ``closed``, ``half_open`` or ``open``."""
    if _metrics is not None:
        _child(_metrics.breaker_state, _circuit_label(name)).set(BREAKER_STATES[state])


def record_breaker_opened(name: str) -> None:
    if _metrics is not None:
        _child(_metrics.breaker_opened, _circuit_label(name)).inc()
        record_breaker_state(name, "open")


def record_redis_latency(op: str, seconds: float) -> None:
    if _metrics is not None:
        _child(_metrics.redis_seconds, op).observe(seconds)


def record_queue(name: str, depth: int) -> None:
    if _metrics is not None:
        _child(_metrics.queue_depth, name).set(depth)


def record_queue_dropped(name: str, n: int = 1) -> None:
    if _metrics is not None:
        _child(_metrics.queue_dropped, name).inc(n)


# -- the event loop ----------------------------------------------------------------------


def record_loop_lag(lag_ms: float) -> None:
    if _metrics is not None:
        _metrics.loop_lag.observe(lag_ms / 1000.0)


def record_loop_stall(running_s: float, runqueue_s: float, other_s: float) -> None:
    if _metrics is not None:
        _child(_metrics.loop_stalled, "running").inc(running_s)
        _child(_metrics.loop_stalled, "runqueue").inc(runqueue_s)
        _child(_metrics.loop_stalled, "other").inc(other_s)


def record_loop_lag_max(max_ms: float) -> None:
    if _metrics is not None:
        _metrics.loop_lag_max.set(max_ms / 1000.0)


_VERDICTS = ("wait", "advance", "rollback", "blocked")


def record_rollout_state(agent: str, percent: float, stage: int) -> None:
    if _metrics is not None:
        name = agent_label(agent)
        _metrics.rollout_percent.labels(name).set(percent)
        _metrics.rollout_stage.labels(name).set(stage)


def record_rollout_verdict(agent: str, verdict: str) -> None:
    if _metrics is not None:
        name = agent_label(agent)
        for kind in _VERDICTS:
            _metrics.rollout_verdict.labels(name, kind).set(1 if kind == verdict else 0)
