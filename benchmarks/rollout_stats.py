"""Operating characteristics of the rollout's success-rate test, in one run.

    python benchmarks/rollout_stats.py --json out.json [--runs 2000] [--requests 10000]

Simulates ``runs`` experiments per scenario at a 50/50 split and a base success rate of 85%,
and looks every 100 requests (the rollout's ``gates.look_every``). Per scenario it reports
the share of experiments that ever reject (an always-valid interval that excludes 0) and the
median number of requests until they do. Scenarios: A/A, with the test as the gates use it
(alpha/4, the Bonferroni share of the four metrics) and at the full alpha; and fine-tuned
better or worse by 2 and 5 points. For contrast: the same data with a fixed-horizon z-test
repeated at every look (what peeking does to a test not built for it).
"""

from __future__ import annotations

import argparse
import json
import platform
from typing import Any

import numpy as np
from scipy import stats

from genesis.rollout._stats import METRICS, MIN_TEST_N, proportion_difference

ALPHA, MDE, BASE, LOOK = 0.05, 0.05, 0.85, 100


def _looks(rng: np.random.Generator, runs: int, requests: int, delta: float) -> dict[str, Any]:
    arm = rng.random((runs, requests)) < 0.5
    p = np.where(arm, BASE + delta, BASE)
    ok = rng.random((runs, requests)) < p
    idx = np.arange(LOOK, requests + 1, LOOK) - 1
    n_f = np.cumsum(arm, axis=1)[:, idx]
    x_f = np.cumsum(arm & ok, axis=1)[:, idx]
    n_b = idx + 1 - n_f
    x_b = np.cumsum(~arm & ok, axis=1)[:, idx]
    return {"n_f": n_f, "x_f": x_f, "n_b": n_b, "x_b": x_b, "n": idx + 1}


def _sequential(look: dict[str, Any], alpha: float) -> np.ndarray:
    _, low, high = proportion_difference(
        look["x_f"], look["n_f"], look["x_b"], look["n_b"], MDE, alpha
    )
    valid = np.minimum(look["n_f"], look["n_b"]) >= MIN_TEST_N
    return ((low > 0) | (high < 0)) & valid


def _naive(look: dict[str, Any], alpha: float) -> np.ndarray:
    n_f, n_b = np.maximum(look["n_f"], 1), np.maximum(look["n_b"], 1)
    pf, pb = look["x_f"] / n_f, look["x_b"] / n_b
    pooled = (look["x_f"] + look["x_b"]) / (n_f + n_b)
    se = np.sqrt(np.maximum(pooled * (1 - pooled) * (1 / n_f + 1 / n_b), 1e-12))
    return np.abs(pf - pb) / se > stats.norm.ppf(1 - alpha / 2)


def _summary(rejects: np.ndarray, n: np.ndarray) -> dict[str, Any]:
    ever = rejects.any(axis=1)
    first = np.where(ever, rejects.argmax(axis=1), -1)
    at = n[first[ever]] if ever.any() else np.array([])
    return {
        "reject_rate": round(float(ever.mean()), 4),
        "median_requests_to_reject": int(np.median(at)) if at.size else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", default="rollout_stats.json")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    results: dict[str, Any] = {}
    for name, delta in [("aa", 0.0), ("better_2", 0.02), ("better_5", 0.05), ("worse_5", -0.05)]:
        look = _looks(rng, args.runs, args.requests, delta)
        results[name] = {
            "gates_alpha_over_4": _summary(_sequential(look, ALPHA / METRICS), look["n"]),
            "full_alpha": _summary(_sequential(look, ALPHA), look["n"]),
            "naive_z_every_look": _summary(_naive(look, ALPHA), look["n"]),
        }
    report = {
        "benchmark": "rollout_stats",
        "runs": args.runs,
        "requests": args.requests,
        "look_every": LOOK,
        "alpha": ALPHA,
        "base_success": BASE,
        "split": 0.5,
        "python": platform.python_version(),
        "results": results,
    }
    with open(args.json, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
