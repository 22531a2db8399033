"""The recorder: conventional names, bounded labels, no-ops while off."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from genesis._breaker import CircuitBreaker
from genesis.observability import (
    disable_metrics,
    enable_metrics,
    metrics_enabled,
    record_abstained,
    record_cache_lookups,
    record_cost,
    record_queue,
    record_queue_dropped,
    record_redis_latency,
    record_request,
    record_stages,
    record_tokens,
    render_metrics,
)


@pytest.fixture
def metrics() -> Iterator[None]:
    enable_metrics(agents=["support"], models=["base-7b"])
    try:
        yield
    finally:
        disable_metrics()


def _value(text: str, series: str) -> float:
    """The value of ``name{a="x",...}`` (labels in any order, all of them given)."""
    name, _, labels = series.partition("{")
    want = sorted(re.findall(r'(\w+)="([^"]*)"', labels))
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        got_name, _, got_labels = key.partition("{")
        if got_name == name and sorted(re.findall(r'(\w+)="([^"]*)"', got_labels)) == want:
            return float(value)
    raise AssertionError(f"{series} not in metrics")


def test_recorders_are_noops_while_metrics_are_off() -> None:
    assert not metrics_enabled()
    record_request("support", "base-7b", None, "ok", 0.1)
    record_tokens("support", "base-7b", 10, 5, 3)
    assert render_metrics()[0] == b""


def test_only_configured_agents_and_models_become_label_values(metrics: None) -> None:
    record_request("support", "base-7b", None, "ok", 0.2)
    record_request("' OR 1=1 --", "ft:secret-model", "made-up", "error", 0.3)
    text = render_metrics()[0].decode()
    ok = 'genesis_requests_total{agent="support",model="base-7b",variant="none",outcome="ok"}'
    other = 'genesis_requests_total{agent="other",model="other",variant="other",outcome="error"}'
    assert _value(text, ok) == 1
    assert _value(text, other) == 1
    assert "secret-model" not in text and "1=1" not in text
    bucket = 'genesis_request_duration_seconds_bucket{agent="support",model="base-7b",'
    assert _value(text, bucket + 'variant="none",outcome="ok",le="0.25"}') == 1


def test_tokens_cost_stages_and_queues_use_base_units(metrics: None) -> None:
    record_tokens("support", "base-7b", 100, 60, 20)
    record_cost("support", "base-7b", 0.0025)
    record_stages({"embed": 12.0, "total": 50.0})
    record_queue("tracking", 7)
    record_queue_dropped("tracking")
    record_redis_latency("mget", 0.0004)
    record_abstained("support", saved_call=True)
    text = render_metrics()[0].decode()
    tokens = 'genesis_tokens_total{agent="support",model="base-7b",kind="%s"}'
    assert [_value(text, tokens % k) for k in ("prompt", "cached", "completion")] == [100, 60, 20]
    assert _value(text, 'genesis_cost_usd_total{agent="support",model="base-7b"}') == 0.0025
    assert _value(text, 'genesis_stage_duration_seconds_sum{stage="embed"}') == 0.012
    assert 'stage="total"' not in text  # the total is the request, not a stage
    assert _value(text, 'genesis_queue_depth{queue="tracking"}') == 7
    assert _value(text, 'genesis_queue_dropped_total{queue="tracking"}') == 1
    assert _value(text, 'genesis_redis_operation_duration_seconds_count{op="mget"}') == 1
    assert _value(text, 'genesis_model_calls_saved_total{agent="support"}') == 1


def test_cache_lookups_count_each_tier_consulted(metrics: None) -> None:
    record_cache_lookups(["l1", "l1", "l2", "miss"])
    text = render_metrics()[0].decode()
    series = 'genesis_token_cache_lookups_total{tier="%s",outcome="%s"}'
    assert _value(text, series % ("l1", "hit")) == 2
    assert _value(text, series % ("l1", "miss")) == 2
    assert _value(text, series % ("l2", "hit")) == 1
    assert _value(text, series % ("l2", "miss")) == 1


def test_breaker_state_follows_the_circuit(metrics: None) -> None:
    now = [0.0]
    breaker = CircuitBreaker(1, 5.0, clock=lambda: now[0], name="token-cache-l2")
    state = 'genesis_breaker_state{circuit="token-cache-l2"}'
    assert _value(render_metrics()[0].decode(), state) == 0
    breaker.record_failure()
    assert _value(render_metrics()[0].decode(), state) == 2
    now[0] = 6.0
    assert breaker.allow()
    assert _value(render_metrics()[0].decode(), state) == 1
    breaker.record_success()
    text = render_metrics()[0].decode()
    assert _value(text, state) == 0
    assert _value(text, 'genesis_breaker_opened_total{circuit="token-cache-l2"}') == 1
    # A per-model circuit named by an unconfigured model id is not a label value.
    CircuitBreaker(1, 5.0, name="ft:acme:secret").record_failure()
    CircuitBreaker(1, 5.0, name="support:ft:acme:secret").record_failure()
    assert not re.search(r"secret", render_metrics()[0].decode())


def test_model_circuits_keep_configured_ids_with_colons() -> None:
    enable_metrics(agents=["support"], models=["ft:base-7b:acme:support-v3"])
    try:
        for name in ("ft:base-7b:acme:support-v3", "support:ft:base-7b:acme:support-v3"):
            CircuitBreaker(1, 5.0, name=name).record_failure()
        CircuitBreaker(1, 5.0, name="replica-2")
        text = render_metrics()[0].decode()
        series = 'genesis_breaker_opened_total{circuit="ft:base-7b:acme:support-v3"}'
        assert _value(text, series) == 2
        assert _value(text, 'genesis_breaker_state{circuit="replica-2"}') == 0
    finally:
        disable_metrics()
