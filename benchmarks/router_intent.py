"""Does the intent classifier route unseen requests better than card similarity? Inside tune.

    python benchmarks/router_intent.py --json out.json

The router's labelled examples (``src/genesis/router/examples.jsonl``, the tuning split of
``benchmarks/data/answer_quality``) were written in rounds; each later round was a fresh
test split once. For each of the last eight rounds (the 7th to 14th routing splits), this
trains on the examples written before it (plus ``tests/router/labelled_tasks.jsonl``) and
routes the round's tasks with, side by side in one process on the demo knowledge base:

- ``card_router``: the router without examples (card similarity, rules, evidence);
- ``intent_router``: the same router with the intent classifier trained on those examples
  (as it ships: the MiniLM vector and the bag of terms, `intent_features`);
- ``intent_router_no_words``: the same, the classifier reading the MiniLM vector only;
- ``classifier_alone`` and ``classifier_alone_no_words``: the classifier's top agent, no
  rules, no evidence, no off-topic check;
- ``knn_5``: a similarity-weighted vote of the 5 nearest examples (MiniLM cosine).

Writes ``{"7th": {system: accuracy, "train", "n"}, ..., "mean": {system: accuracy}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from genesis.app import Genesis
from genesis.router import HALORouter, _intent, cards_from_profiles
from genesis.router._intent import (
    PACKAGED_EXAMPLES,
    IntentClassifier,
    bag_of_terms,
    intent_features,
)
from genesis.router._request import read_request, request_text

REPO = Path(__file__).resolve().parents[1]
LABELLED = REPO / "tests" / "router" / "labelled_tasks.jsonl"
# (name, first line, end line) of the rounds scored, in examples.jsonl (data README history).
ROUNDS = [
    ("7th", 395, 515),
    ("8th", 515, 635),
    ("9th", 635, 755),
    ("10th", 755, 875),
    ("11th", 875, 995),
    ("12th", 995, 1115),
    ("13th", 1115, 1235),
    ("14th", 1235, 1355),
    ("15th", 1355, 1475),
    ("16th", 1475, 1595),
    ("17th", 1595, 1715),
    ("18th", 1715, 1835),
    ("19th", 1835, 1955),
    ("20th", 1955, 2075),
    ("21st", 2075, 2195),
    ("22nd", 2195, 2315),
]


def load(path: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [(row["task"], row["agent"]) for row in rows]


async def score(genesis: Genesis, router: HALORouter, held: list[tuple[str, str]]) -> float:
    genesis.router = router
    right = 0
    for task, agent in held:
        right += (await genesis.route_async(task)).agent == agent
    return round(right / len(held), 4)


async def run(home: Path) -> dict[str, Any]:
    examples, labelled = load(PACKAGED_EXAMPLES), load(LABELLED)
    out: dict[str, Any] = {}
    async with Genesis.from_config("dev", environ={}, overrides={"home": str(home)}) as g:
        await g.ensure_demo()
        cards = cards_from_profiles(g.settings.agents.values())
        names = [c.name for c in cards]

        def router(train: list[tuple[str, str]]) -> HALORouter:
            return HALORouter(
                cards,
                embed=g.embedder.embed_query,
                embed_batch=g.embedder.embed_documents,
                threshold=g.settings.router.threshold,
                default_agent=g.settings.router.default_agent,
                evidence=g._retrieval_evidence,
                examples=train,
            )

        def vectors(rows: list[tuple[str, str]]) -> np.ndarray:
            raw = np.asarray(g.embedder.embed_documents([request_text(t) for t, _ in rows]))
            unit: np.ndarray = raw / np.linalg.norm(raw, axis=1, keepdims=True)
            return unit

        def features(rows: list[tuple[str, str]], unit: np.ndarray) -> np.ndarray:
            bags = [bag_of_terms(*read_request(t)) for t, _ in rows]
            return np.stack([intent_features(v, b) for v, b in zip(unit, bags, strict=True)])

        def alone(
            train: list[tuple[str, str]],
            held: list[tuple[str, str]],
            x_train: np.ndarray,
            x_held: np.ndarray,
        ) -> float:
            fitted = IntentClassifier.fit(names, x_train.astype(np.float32), [a for _, a in train])
            right = sum(
                max(p := fitted.probabilities(v.astype(np.float32)), key=p.__getitem__) == a
                for v, (_, a) in zip(x_held, held, strict=True)
            )
            return round(right / len(held), 4)

        for name, start, end in ROUNDS:
            train, held = examples[:start] + labelled, examples[start:end]
            x_train, x_held = vectors(train), vectors(held)
            knn = 0
            for row, (_, agent) in zip(x_held @ x_train.T, held, strict=True):
                votes: dict[str, float] = {}
                for i in np.argsort(-row)[:5]:
                    votes[train[i][1]] = votes.get(train[i][1], 0.0) + float(row[i])
                knn += max(votes, key=votes.__getitem__) == agent
            out[name] = {
                "n": len(held),
                "train": len(train),
                "card_router": await score(g, router([]), held),
                "intent_router": await score(g, router(train), held),
                "classifier_alone": alone(
                    train, held, features(train, x_train), features(held, x_held)
                ),
                "classifier_alone_no_words": alone(train, held, x_train, x_held),
                "knn_5": round(knn / len(held), 4),
            }
            weight, _intent.BAG_WEIGHT = _intent.BAG_WEIGHT, 0.0  # the bag weighs nothing
            try:
                out[name]["intent_router_no_words"] = await score(g, router(train), held)
            finally:
                _intent.BAG_WEIGHT = weight
            print(name, out[name], flush=True)
        systems = [k for k in out[ROUNDS[0][0]] if k not in ("n", "train")]
        out["mean"] = {
            k: round(sum(out[r][k] for r, _, _ in ROUNDS) / len(ROUNDS), 4) for k in systems
        }
        print("mean", out["mean"], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="genesis-router-intent-") as tmp:
        out = asyncio.run(run(Path(tmp)))
    args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
