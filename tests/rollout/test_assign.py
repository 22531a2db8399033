"""Assignment: deterministic, uniform, monotone, keyed, forced users."""

from __future__ import annotations

import numpy as np
import pytest

from genesis.rollout import BUCKETS, Assigner, Unit, threshold, unit_for

IDS = [f"user-{i}" for i in range(100_000)]


@pytest.fixture(scope="module")
def buckets() -> np.ndarray:
    assigner = Assigner(b"test-secret")
    return np.array([assigner.bucket("support:ft", u) for u in IDS])


def test_deterministic() -> None:
    a, b = Assigner(b"s"), Assigner(b"s")
    assert [a.bucket("e", u) for u in IDS[:1000]] == [b.bucket("e", u) for u in IDS[:1000]]
    assert a.assign("e", Unit("user", "x"), 30) == b.assign("e", Unit("user", "x"), 30)


@pytest.mark.parametrize("percent", [10, 25, 50])
def test_uniform_within_one_percent(buckets: np.ndarray, percent: int) -> None:
    share = float((buckets < threshold(percent)).mean())
    assert abs(share - percent / 100) <= 0.01
    assert 0 <= buckets.min() and buckets.max() < BUCKETS


def test_monotone_when_the_percentage_rises() -> None:
    assigner = Assigner(b"test-secret")
    steps = [0, 1, 10, 25, 33.3, 50, 75, 100]
    before = {u: "baseline" for u in IDS[:20_000]}
    for percent in steps:
        now = {u: assigner.assign("support:ft", Unit("user", u), percent).variant for u in before}
        # Only baseline -> finetuned moves: nobody on the fine-tuned side goes back.
        assert all(now[u] == "finetuned" for u, v in before.items() if v == "finetuned")
        before = now
    assert set(before.values()) == {"finetuned"}


def test_the_secret_and_the_experiment_key_the_hash() -> None:
    one, two = Assigner(b"one"), Assigner(b"two")
    differ = sum(one.bucket("e", u) != two.bucket("e", u) for u in IDS[:1000])
    assert differ > 990
    assert sum(one.bucket("e", u) != one.bucket("f", u) for u in IDS[:1000]) > 990


def test_forced_users_and_agents_without_a_finetuned_model() -> None:
    assigner = Assigner(b"s", {"vip": "baseline", "qa": "finetuned"})
    assert assigner.assign("e", Unit("user", "vip"), 100).variant == "baseline"
    forced = assigner.assign("e", Unit("user", "qa"), 0)
    assert forced.variant == "finetuned" and forced.experiment == "e:forced"
    # Forcing is by user id: a session that happens to share the name is not forced.
    assert assigner.assign("e", Unit("session", "qa"), 0).variant == "baseline"
    assert assigner.assign(None, Unit("user", "x"), 100).variant == "baseline"


def test_unit_is_user_else_session_else_request() -> None:
    assert unit_for("u", "s", "r") == Unit("user", "u")
    assert unit_for(None, "s", "r") == Unit("session", "s")
    assert unit_for(None, None, "r") == Unit("request", "r")
