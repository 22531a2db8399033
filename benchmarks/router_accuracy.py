"""Routing accuracy of the HALO router with the default agent cards on labelled tasks.

    python benchmarks/router_accuracy.py --json out.json [--tasks tests/router/labelled_tasks.jsonl]

Writes ``{"accuracy", "n", "by_method", "confusion", "errors", ...}`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from genesis.config import load_settings
from genesis.router import HALORouter, cards_from_profiles

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TASKS = REPO / "tests" / "router" / "labelled_tasks.jsonl"
# Tasks no agent should claim by similarity: they show whether the threshold lets the
# default agent catch what is off-topic.
OFF_TOPIC = [
    "What's the weather in Paris tomorrow?",
    "Tell me a joke about cats",
    "Who won the football match last night?",
    "Translate 'good morning' into Spanish",
    "What is the capital of Australia?",
    "Recommend a good novel to read",
]


def _make_embed() -> Callable[[str], np.ndarray]:
    """The production embedder (NumPy all-MiniLM-L6-v2)."""
    from genesis.knowledge import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    embedder.warm_up()
    return embedder.embed_query


def load_tasks(path: Path) -> list[dict[str, str]]:
    """The labelled tasks: one ``{"task", "agent"}`` object per line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def evaluate(router: HALORouter, tasks: list[dict[str, str]]) -> dict[str, Any]:
    """Route every task; accuracy overall and per method, confusion, errors, latency."""
    by_method: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    errors, times = [], []
    for item in tasks:
        t0 = time.perf_counter()
        decision = router.route(item["task"])
        times.append(time.perf_counter() - t0)
        ok = decision.agent == item["agent"]
        by_method[decision.method][0] += ok
        by_method[decision.method][1] += 1
        confusion[item["agent"]][decision.agent] += 1
        if not ok:
            errors.append({**item, "got": decision.agent, "reason": decision.reason})
    n = len(tasks)
    correct = sum(c for c, _ in by_method.values())
    return {
        "accuracy": correct / n if n else 0.0,
        "n": n,
        "by_method": {
            m: {"correct": c, "n": k, "accuracy": c / k} for m, (c, k) in by_method.items()
        },
        "confusion": {a: dict(row) for a, row in confusion.items()},
        "errors": errors,
        "median_route_ms": statistics.median(times) * 1000 if times else 0.0,
    }


def _print_table(result: dict[str, Any]) -> None:
    print(f"accuracy {result['accuracy']:.3f} over {result['n']} tasks")
    print(f"{'method':<12}{'correct':>8}{'n':>5}{'acc':>7}")
    for method, row in sorted(result["by_method"].items()):
        print(f"{method:<12}{row['correct']:>8}{row['n']:>5}{row['accuracy']:>7.2f}")
    print(f"median route time {result['median_route_ms']:.1f} ms")
    print(f"off-topic tasks sent to the default agent: {result['off_topic_default_rate']:.2f}")
    for err in result["errors"]:
        print(
            f"  MISS want={err['agent']} got={err['got']} ({err['reason']}): {err['task'][:70]!r}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--tasks", type=Path, default=DEFAULT_TASKS)
    parser.add_argument("--env", default="dev", help="configuration whose agents to route to")
    parser.add_argument("--threshold", type=float, default=None, help="default: configured")
    args = parser.parse_args()
    settings = load_settings(args.env, environ={})
    threshold = settings.router.threshold if args.threshold is None else args.threshold
    router = HALORouter(
        cards_from_profiles(settings.agents.values()),
        embed=_make_embed(),
        threshold=threshold,
        default_agent=settings.router.default_agent,
    )
    router.warm_up()
    result = evaluate(router, load_tasks(args.tasks))
    result["threshold"] = threshold
    off = [router.route(task) for task in OFF_TOPIC]
    result["off_topic_default_rate"] = sum(d.method == "default" for d in off) / len(off)
    args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    _print_table(result)


if __name__ == "__main__":
    main()
