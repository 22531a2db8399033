"""Fit which collection answers a question (`genesis.rag.CHOICE` and ``ALTERNATE_MARGIN``).

    python benchmarks/collection_choice.py --json out.json

The router picks an agent; its collection drafts the answer, and every other collection is
weighed too (`genesis.rag.TokenCachedRAG.answer`): an alternate answers instead when its
evidence's ``choice`` score (`genesis.rag.CHOICE`, weights over `genesis.rag.Evidence`) beats
the routed draft's by ``ALTERNATE_MARGIN``. This script fits both on the answerable tuning
questions (``benchmarks/data/answer_quality/tune_questions.jsonl``; the test split is never
read): each question is routed, then answered from every collection alone (abstention off,
on a fresh home with the demo knowledge base), keeping each draft's evidence and whether its
sources include one of the question's source files.

A conditional logit (softmax over the collections of one question; features: the evidence's
fields and 1 for the routed collection; L2, plain gradient descent from zero, so the same
weights on every run) is fitted on the questions that some but not every collection answers
from the right file. Its weights, scaled to sum to 1 over the evidence, are the ``choice``
weights, and the routed collection's weight on that scale is the margin. Writes

    {"n", "weights": {feature: w}, "margin",
     "source_hit": {"in_build", "fitted_all", "held_out", "held_out_in_build",
                    "held_out_by_split": {split: [fitted, in_build]}}, "oracle"}

``source_hit`` is the share of questions whose chosen draft cites a right file, the choice
simulated as the pipeline makes it (the routed draft first, alternates in the router's order,
the dense gate `genesis.rag._pipeline.ALTERNATE_DENSE_GATE`): with the weights in the build,
with the fitted ones, and leaving each written split out in turn (the estimate for a new
author's questions). ``oracle``: some collection's draft cites a right file.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from answer_quality import DATA, load  # noqa: E402

from genesis import Genesis  # noqa: E402
from genesis.rag import Evidence  # noqa: E402
from genesis.rag._evidence import CHOICE  # noqa: E402
from genesis.rag._pipeline import ALTERNATE_DENSE_GATE, ALTERNATE_MARGIN  # noqa: E402
from genesis.router import answer_alternates  # noqa: E402

FEATURES = tuple(f.name for f in dataclasses.fields(Evidence))
L2 = 1.0
STEPS = 500
LEARNING_RATE = 0.5


async def collect(home: Path) -> list[dict[str, Any]]:
    """For each answerable tuning question: its split, the collections in the order the
    pipeline weighs them (the routed one first), and each one's evidence and hit."""
    questions = [q for q in load(DATA / "tune_questions.jsonl") if q.get("answerable", True)]
    overrides = {"home": str(home), "answers": {"abstain": False}}
    out: list[dict[str, Any]] = []
    async with Genesis.from_config("dev", environ={}, overrides=overrides) as genesis:
        await genesis.ensure_demo()
        profiles = genesis.settings.agents
        by_collection = {p.collection: name for name, p in profiles.items()}
        for item in questions:
            decision = await genesis.route_async(item["question"])
            own = profiles[decision.agent].collection
            order = [own, *answer_alternates(decision, profiles)]
            drafts = []
            for collection in order:
                agent = genesis.agents[by_collection[collection]]
                answer = await agent.answer(item["question"], abstain=False)
                cited = {f"{answer.collection}/{s.source}" for s in answer.sources}
                drafts.append(
                    {
                        "collection": collection,
                        "evidence": [float(answer.evidence[f]) for f in FEATURES],
                        "hit": bool(cited & set(item["sources"])),
                    }
                )
            out.append({"split": item["split"], "drafts": drafts})
    return out


def features(row: dict[str, Any]) -> np.ndarray:
    """One row per draft: the evidence, then 1.0 for the routed (first) collection."""
    x = np.array([d["evidence"] for d in row["drafts"]], dtype=float)
    routed = np.zeros((len(x), 1))
    routed[0] = 1.0
    return np.hstack([x, routed])


def fit(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, float], float]:
    """The conditional logit's evidence weights (scaled to sum to 1) and margin."""
    data = []
    for row in rows:
        y = np.array([d["hit"] for d in row["drafts"]], dtype=float)
        if 0 < y.sum() < len(y):
            data.append((features(row), y / y.sum()))
    w = np.zeros(len(FEATURES) + 1)
    for _ in range(STEPS):
        grad = np.zeros_like(w)
        for x, target in data:
            s = x @ w
            p = np.exp(s - s.max())
            grad += x.T @ (p / p.sum() - target)
        w -= LEARNING_RATE * (grad + L2 * w) / len(data)
    evidence = np.clip(w[:-1], 0.0, None)  # a negative weight would reward weak evidence
    scale = float(evidence.sum())
    weights = {f: round(float(v) / scale, 4) for f, v in zip(FEATURES, evidence, strict=True)}
    return weights, round(float(w[-1]) / scale, 4)


def chosen(row: dict[str, Any], weights: dict[str, float], margin: float) -> dict[str, Any]:
    """The draft the pipeline answers from: the routed one, unless an alternate that passes
    the dense gate beats the current draft's score (by ``margin`` over the routed draft)."""
    vector = np.array([weights.get(f, 0.0) for f in FEATURES])
    dense = FEATURES.index("dense")
    best = row["drafts"][0]
    for draft in row["drafts"][1:]:
        if draft["evidence"][dense] < best["evidence"][dense] - ALTERNATE_DENSE_GATE:
            continue
        extra = margin if best is row["drafts"][0] else 0.0
        if np.dot(draft["evidence"], vector) > np.dot(best["evidence"], vector) + extra:
            best = draft
    return best


def source_hit(rows: Sequence[dict[str, Any]], weights: dict[str, float], margin: float) -> float:
    return round(sum(chosen(r, weights, margin)["hit"] for r in rows) / max(len(rows), 1), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(collect(Path(tmp)))
    build = {f: getattr(CHOICE, f) for f in FEATURES}
    weights, margin = fit(rows)
    by_split: dict[str, list[float]] = {}
    held, held_build = 0.0, 0.0
    for name in dict.fromkeys(r["split"] for r in rows):
        test = [r for r in rows if r["split"] == name]
        w, m = fit([r for r in rows if r["split"] != name])
        by_split[name] = [source_hit(test, w, m), source_hit(test, build, ALTERNATE_MARGIN)]
        held += by_split[name][0] * len(test)
        held_build += by_split[name][1] * len(test)
    result = {
        "n": len(rows),
        "weights": weights,
        "margin": margin,
        "source_hit": {
            "in_build": source_hit(rows, build, ALTERNATE_MARGIN),
            "fitted_all": source_hit(rows, weights, margin),
            "held_out": round(held / len(rows), 4),
            "held_out_in_build": round(held_build / len(rows), 4),
            "held_out_by_split": by_split,
        },
        "oracle": round(sum(any(d["hit"] for d in r["drafts"]) for r in rows) / len(rows), 4),
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
