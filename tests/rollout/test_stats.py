"""Rollout statistics: known truths end in the right verdict; peeking does not inflate
false alarms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genesis.config import load_settings
from genesis.rollout import Arm, Rollout, SqlRolloutStore, compare
from genesis.rollout._stats import METRICS, proportion_difference, quantile_bounds, srm_check
from genesis.store import open_database
from genesis.testing.rollout_sim import MemoryEventStore, Truth, simulate_events

AGENT = "support"


def _verdict(tmp_path: Path, finetuned: Truth, baseline: Truth, drop: float = 0.0) -> str:
    clock = [1_000.0]
    settings = load_settings(
        "dev", environ={}, overrides={"home": str(tmp_path), "rollout.gates.min_stage_minutes": 0}
    )
    events = MemoryEventStore()
    store = SqlRolloutStore(open_database(f"sqlite:///{tmp_path}/g.db"), clock=lambda: clock[0])
    rollout = Rollout(settings.rollout, settings.agents, store, events, clock=lambda: clock[0])
    state = rollout.set(AGENT, 50, "test")
    events.write(
        simulate_events(
            rollout._assigner,
            agent=AGENT,
            experiment=state.experiment,
            percent=50,
            requests=6_000,
            start_ts=1_010.0,
            finetuned=finetuned,
            baseline=baseline,
            drop_finetuned=drop,
            seed=7,
        )
    )
    clock[0] = 1_000.0 + 2 * 3600
    return rollout.evaluate(AGENT).kind


def test_finetuned_worse_by_five_points_rolls_back(tmp_path: Path) -> None:
    assert _verdict(tmp_path, Truth(success=0.80), Truth(success=0.85)) == "rollback"


def test_finetuned_better_advances(tmp_path: Path) -> None:
    assert _verdict(tmp_path, Truth(success=0.90), Truth(success=0.85)) == "advance"


def test_no_difference_waits(tmp_path: Path) -> None:
    assert _verdict(tmp_path, Truth(), Truth()) == "wait"


def test_broken_split_blocks_every_verdict(tmp_path: Path) -> None:
    # A quarter of the fine-tuned events lost: even a truly worse model is not judged.
    truth = (Truth(success=0.80), Truth(success=0.85))
    assert _verdict(tmp_path, *truth, drop=0.25) == "blocked"


def test_p95_regression_rolls_back(tmp_path: Path) -> None:
    slow = Truth(latency_median_ms=700.0)
    assert _verdict(tmp_path, slow, Truth()) == "rollback"


def test_aa_false_alarm_rate_with_peeking_every_100_requests() -> None:
    """200 A/A experiments, 5,000 requests each at a 50/50 split, a look every 100 requests
    (50 looks): an experiment is a false alarm if the success-rate interval excludes 0 at
    ANY look. Vectorised: every look of every experiment in one call."""
    rng = np.random.default_rng(2026)
    runs, requests, look_every, p = 200, 5_000, 100, 0.85
    arm = rng.random((runs, requests)) < 0.5
    ok = rng.random((runs, requests)) < p
    looks = np.arange(look_every, requests + 1, look_every) - 1
    n_f = np.cumsum(arm, axis=1)[:, looks]
    x_f = np.cumsum(arm & ok, axis=1)[:, looks]
    n_b = looks + 1 - n_f
    x_b = np.cumsum(~arm & ok, axis=1)[:, looks]
    _, low, high = proportion_difference(x_f, n_f, x_b, n_b, 0.05, 0.05 / METRICS)
    valid = np.minimum(n_f, n_b) >= 30
    alarms = ((low > 0) | (high < 0)) & valid
    rate = alarms.any(axis=1).mean()
    assert rate <= 0.05
    # The same test at the full alpha (not split over metrics) still holds its level.
    _, low, high = proportion_difference(x_f, n_f, x_b, n_b, 0.05, 0.05)
    assert (((low > 0) | (high < 0)) & valid).any(axis=1).mean() <= 0.05


@pytest.mark.slow
def test_aa_full_verdict_never_decides_more_than_alpha() -> None:
    """200 A/A experiments through the whole comparison (success, fallback, errors, p95,
    cost) with a look every 100 requests: at most 5% ever see advance or rollback."""
    from genesis.rollout import decide

    settings = load_settings("dev", environ={}, overrides={"rollout.gates.min_stage_minutes": 0})
    gates = settings.rollout.gates
    rng = np.random.default_rng(11)
    runs, requests, alarms = 200, 2_000, 0
    for _ in range(runs):
        arm = rng.random(requests) < 0.5
        full = _arm(rng, requests)
        for n in range(100, requests + 1, 100):
            f, b = _split(full, arm, n)
            cmp = compare(f, b, share=0.5, alpha=gates.alpha, mde=gates.mde)
            if decide(cmp, gates, 1e9).kind in ("advance", "rollback"):
                alarms += 1
                break
    assert alarms / runs <= 0.05


def _arm(rng: np.random.Generator, n: int) -> Arm:
    ok = rng.random(n) < 0.85
    return Arm(
        success=ok,
        error=rng.random(n) < 0.01,
        fallback=rng.random(n) < 0.02,
        abstained=~ok,
        latency_ms=400 * rng.lognormal(0, 0.4, n),
        cost_usd=0.002 * rng.lognormal(0, 0.2, n),
        ts=np.arange(n, dtype=float),
    )


def _split(full: Arm, arm: np.ndarray, n: int) -> tuple[Arm, Arm]:
    head = full.head(n)
    pick = arm[:n]
    return _mask(head, pick), _mask(head, ~pick)


def _mask(a: Arm, m: np.ndarray) -> Arm:
    return Arm(
        a.success[m],
        a.error[m],
        a.fallback[m],
        a.abstained[m],
        a.latency_ms[m],
        a.cost_usd[m],
        a.ts[m],
    )


def test_quantile_bounds_cover_the_true_p95() -> None:
    rng = np.random.default_rng(3)
    true_p95 = float(np.exp(0.4 * 1.6448536))  # lognormal(0, 0.4)
    misses = 0
    for _ in range(400):
        bounds = quantile_bounds(rng.lognormal(0, 0.4, 500), 0.95, 0.05)
        assert bounds is not None
        misses += not bounds[0] <= true_p95 <= bounds[1]
    assert misses / 400 <= 0.10 + 0.03  # two one-sided 5% bounds, plus sampling slack


def test_srm_check() -> None:
    assert not srm_check(5_020, 4_980, 0.5, 0.001).mismatch
    assert srm_check(4_500, 5_500, 0.5, 0.001).mismatch
    assert not srm_check(1_010, 8_990, 0.1, 0.001).mismatch
    assert srm_check(3, 0, 0.0, 0.001).mismatch
