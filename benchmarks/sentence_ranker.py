"""Fit the extractive answer's sentence ranker (`genesis.llm.RANKER`) on the tuning split.

    python benchmarks/sentence_ranker.py --json out.json

Every answerable tuning question (``benchmarks/data/answer_quality/tune_questions.jsonl``;
the test split is never read) goes through ``Genesis.ask`` with abstention off, on a fresh home
with the demo knowledge base. The sentences of the answer's chunks are the candidates, with
their features (`genesis.llm.sentence_features`: MiniLM similarity, term overlap, the chunk's
dense score, answer-type matches, ...); a sentence is a positive when it holds one of the
question's expected facts (case-insensitively, as ``answer_quality.py`` checks them).

A logistic regression (class-balanced, L2, standardised features, plain gradient descent from
zero: the same weights on every run over the same rows) is fitted on all of them; its weights
and bias, in raw feature units, are what `RANKER` holds. Writes

    {"n", "weights": {feature: w}, "bias",
     "facts_in_quotes": {"in_build", "match", "fitted_all", "held_out",
                         "held_out_by_split": {split: share}}}

``facts_in_quotes`` is the share of questions whose quoted sentences (`choose_sentences`)
hold every expected fact: with the ranker in the build, with `MATCH` (similarity and overlap
only, the ranking before the fitted one), with the ranker fitted here on all rows, and,
leaving each written split out in turn, with a ranker fitted on the other splits: the
estimate for a new author's questions (``held_out``).
Only questions whose chunks hold every fact somewhere count for the fit and the shares.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
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
from genesis.llm import (  # noqa: E402
    MATCH,
    RANK_FEATURES,
    RankWeights,
    _extractive,
    choose_sentences,
    lexical_overlaps,
    rank_sentences,
    sentence_features,
    split_sentences,
)

L2 = 1.0
STEPS = 300
LEARNING_RATE = 0.1


async def collect(home: Path) -> list[dict[str, Any]]:
    """For each answerable tuning question: the split, the facts, and the candidate
    sentences of the answer's chunks with their features."""
    questions = [q for q in load(DATA / "tune_questions.jsonl") if q.get("answerable", True)]
    overrides = {"home": str(home), "answers": {"abstain": False}}
    out: list[dict[str, Any]] = []
    async with Genesis.from_config("dev", environ={}, overrides=overrides) as genesis:
        await genesis.ensure_demo()
        scorer = genesis._evidence
        calls: list[tuple[Any, ...]] = []
        assess = scorer.assess

        def recording(*args: Any) -> Any:
            result = assess(*args)
            calls.append((args, result))
            return result

        scorer.assess = recording  # type: ignore[method-assign]
        for item in questions:
            calls.clear()
            answer = (await genesis.ask(item["question"])).answer
            # The draft that answered: the one whose quotes the answer holds.
            chosen = [
                args
                for args, result in calls
                if result.quotes and all(q.text in answer.answer for q in result.quotes)
            ]
            if not chosen:
                continue
            query, _, _, contexts, relevance = chosen[-1]
            sentences = split_sentences(contexts, query)
            if not sentences:
                continue
            vectors = genesis.text_vectors.embed_documents([s.text for s in sentences])
            semantic = [float(v) for v in vectors @ genesis.embedder.embed_query(query)]
            out.append(
                {
                    "split": item["split"],
                    "facts": item["facts"],
                    "query": query,
                    "sentences": sentences,
                    "semantic": semantic,
                    "relevance": list(relevance),
                }
            )
    return out


def features(row: dict[str, Any]) -> np.ndarray:
    query, sentences = row["query"], row["sentences"]
    lexical = lexical_overlaps(query, sentences) or [0.0] * len(sentences)
    return np.array(sentence_features(query, sentences, row["semantic"], lexical, row["relevance"]))


def labels(row: dict[str, Any]) -> np.ndarray:
    facts = [f.lower() for f in row["facts"]]
    return np.array([any(f in s.text.lower() for f in facts) for s in row["sentences"]], float)


def answerable_in_chunks(row: dict[str, Any]) -> bool:
    text = " ".join(s.text.lower() for s in row["sentences"])
    return all(f.lower() in text for f in row["facts"])


def fit(rows: Sequence[dict[str, Any]]) -> RankWeights:
    """The class-balanced logistic regression over every candidate sentence of ``rows``."""
    x = np.vstack([features(r) for r in rows])
    y = np.concatenate([labels(r) for r in rows])
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    balance = np.where(y > 0, (1 - y).sum() / max(y.sum(), 1.0), 1.0)
    w, b = np.zeros(z.shape[1]), 0.0
    for _ in range(STEPS):
        p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
        g = (p - y) * balance
        w -= LEARNING_RATE * (z.T @ g / len(y) + L2 * w / len(y))
        b -= LEARNING_RATE * float(g.mean())
    raw = w / scale
    return RankWeights(tuple(round(float(v), 4) for v in raw), round(b - float(raw @ mean), 4))


def facts_in_quotes(rows: Sequence[dict[str, Any]], ranker: RankWeights | None) -> float:
    """The share of ``rows`` whose quoted sentences hold every expected fact."""
    return quotes(rows, ranker)[0]


def quotes(rows: Sequence[dict[str, Any]], ranker: RankWeights | None) -> tuple[float, float]:
    """``facts_in_quotes`` and the mean number of sentences quoted."""
    hits, quoted = 0, 0
    for row in rows:
        ranked = rank_sentences(
            row["query"], row["sentences"], row["semantic"], row["relevance"], ranker=ranker
        )
        chosen = choose_sentences(ranked)
        text = " ".join(r.sentence.text.lower() for r in chosen)
        hits += all(f.lower() in text for f in row["facts"])
        quoted += len(chosen)
    n = max(len(rows), 1)
    return round(hits / n, 4), round(quoted / n, 2)


def held_out_at_cap(
    held: dict[str, tuple[list[dict[str, Any]], RankWeights]], cap: int
) -> dict[str, float]:
    """Each split's rows judged by the ranker fitted without them (``held``), quoting at most
    ``cap`` sentences: the share whose quotes hold the facts, and the sentences per answer."""
    saved = _extractive.MAX_SENTENCES
    _extractive.MAX_SENTENCES = cap
    try:
        stats = [(quotes(rows, ranker), len(rows)) for rows, ranker in held.values()]
    finally:
        _extractive.MAX_SENTENCES = saved
    n = sum(size for _, size in stats)
    return {
        "held_out": round(sum(round(share * size) for (share, _), size in stats) / n, 4),
        "sentences": round(sum(mean * size for (_, mean), size in stats) / n, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument(
        "--compare-max-sentences",
        type=int,
        nargs="*",
        default=[3, 4, 5],
        help="also report the held-out share quoting at most this many sentences",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(collect(Path(tmp)))
    rows = [r for r in rows if answerable_in_chunks(r)]
    fitted = fit(rows)
    # Each written split with the ranker fitted on the others: fitted once, judged at each cap.
    held = {
        name: (
            [r for r in rows if r["split"] == name],
            fit([r for r in rows if r["split"] != name]),
        )
        for name in dict.fromkeys(r["split"] for r in rows)
    }
    by_split = {name: facts_in_quotes(part, ranker) for name, (part, ranker) in held.items()}
    held_hits = sum(round(by_split[name] * len(part)) for name, (part, _) in held.items())
    by_cap = {str(cap): held_out_at_cap(held, cap) for cap in args.compare_max_sentences}
    result = {
        "n": len(rows),
        "weights": dict(zip(RANK_FEATURES, fitted.weights, strict=True)),
        "bias": fitted.bias,
        "facts_in_quotes": {
            "in_build": facts_in_quotes(rows, None),
            "match": facts_in_quotes(rows, MATCH),
            "fitted_all": facts_in_quotes(rows, fitted),
            "held_out": round(held_hits / len(rows), 4),
            "held_out_by_split": by_split,
        },
        # At most N quoted sentences (`genesis.llm.MAX_SENTENCES` in the build): the held-out
        # share, and the mean number of sentences quoted.
        "held_out_by_max_sentences": by_cap,
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    named = ", ".join(f"{k}={v}" for k, v in result["weights"].items())
    print(f"RANKER = RankWeights.named(bias={fitted.bias}, {named})")
    if not math.isfinite(fitted.bias):
        raise SystemExit("the fit diverged")


if __name__ == "__main__":
    main()
