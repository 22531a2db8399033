"""Fit the answerability model (`genesis.rag.AnswerabilityModel`) on the tuning split.

    python benchmarks/answerability.py --json out.json
    python benchmarks/answerability.py --json out.json --write src/genesis/rag/answerability.json
    python benchmarks/answerability.py --json out.json --write mine.json \
        --questions my_questions.jsonl --home ~/.local/share/genesis   # your own knowledge base

Every tuning question (``benchmarks/data/answer_quality/tune_questions.jsonl``, answerable
and not; the test split is never read) goes through ``Genesis.ask`` with abstention off, on a
fresh home with the demo knowledge base; the answer's evidence (`genesis.rag.Evidence`: the
draft that answers, after the collection choice) and the question's MiniLM vector are its
features. A logistic regression (class-balanced, L2 of strength ``1 / C`` on standardised
features, L-BFGS from zero: the same weights on every run over the same rows) is fitted on
all of them, predicting that the knowledge base answers the question.

The threshold is chosen on questions the model was not fitted on: leaving each written split
out in turn, a model fitted on the other splits scores it; the threshold is the highest at
which at most ``MAX_FALSE_ABSTAIN`` of the answerable questions score below it, pooled over
the splits. Those held-out scores are also the estimate for a new author's questions. Writes

    {"n", "answerable", "unanswerable", "c", "threshold",
     "held_out": {"false_abstain", "abstained"},
     "held_out_by_split": {split: {"n", "false_abstain", "abstained"}},
     "fitted_all": {"false_abstain", "abstained"},
     "policy_in_build": {"false_abstain", "abstained"}}

``policy_in_build``: the linear `genesis.rag.AbstentionPolicy` in the build on the same rows
(fitted on them, so an in-sample figure; ``answer_quality.py --calibrate`` estimates it held
out). With ``--write``, the model (its weights, threshold, the fingerprints of the chunks and
the embedding model it applies to, and these figures) is written for the package.

For your own knowledge base: ``--home`` is a Genesis home where it is ingested (nothing is
ingested then), and ``--questions`` a JSON-lines file of ``{"question", "answerable": true |
false, "split"}`` (``split``: who wrote it or when, so that the held-out estimate leaves each
writer out; without it, questions are dealt into five folds). Point
``answers.answerability_file`` at what ``--write`` wrote.
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
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parent))

from answer_quality import DATA, MAX_FALSE_ABSTAIN, _refusal_shares, load  # noqa: E402

from genesis import Genesis  # noqa: E402
from genesis.rag import AbstentionPolicy, AnswerabilityModel, Evidence  # noqa: E402

FEATURES = tuple(f.name for f in dataclasses.fields(Evidence))
# L2 strength 1 / C over the summed log loss (as scikit-learn's C): strong, since the
# question vector has 384 dimensions and tune ~1,700 questions.
C = 0.003


async def collect(
    questions: Sequence[dict[str, Any]], home: Path, *, demo: bool = True
) -> tuple[list[dict[str, Any]], str, str]:
    """Each question's split, label, evidence and vector; the fingerprints of the knowledge
    base's chunks and of the embedding model. ``demo``: ingest the demo knowledge base."""
    overrides = {"home": str(home), "answers": {"abstain": False, "answerability_model": False}}
    rows: list[dict[str, Any]] = []
    async with Genesis.from_config("dev", environ={}, overrides=overrides) as genesis:
        if demo:
            await genesis.ensure_demo()
        for i, item in enumerate(questions):
            answer = (await genesis.ask(item["question"])).answer
            vector = genesis.embedder.embed_query(item["question"].strip())
            rows.append(
                {
                    "split": item.get("split") or f"fold{i % 5}",
                    "answerable": item.get("answerable", True),
                    "evidence": {f: float(answer.evidence[f]) for f in FEATURES},
                    "vector": np.asarray(vector, dtype=np.float64).reshape(-1),
                }
            )
        scorer = genesis._evidence
        return rows, scorer._vocabulary.fingerprint, genesis.embedder.fingerprint


def matrix(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    return np.array([[r["evidence"][f] for f in FEATURES] + list(r["vector"]) for r in rows])


# A fitted model: (mean, scale, weights, bias) over the features.
Params = tuple[np.ndarray, np.ndarray, np.ndarray, float]


def fit(x: np.ndarray, y: np.ndarray, c: float) -> Params:
    """Class-balanced L2 logistic regression of ``y`` (1: answerable) on standardised ``x``:
    (mean, scale, weights, bias)."""
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    balance = np.where(y > 0, len(y) / (2 * y.sum()), len(y) / (2 * (1 - y).sum()))

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        margin = z @ w + b
        p = 1.0 / (1.0 + np.exp(-margin))
        nll = balance * (np.logaddexp(0.0, margin) - y * margin)
        g = balance * (p - y)
        value = float(nll.sum() + (w @ w) / (2 * c))
        grad = np.concatenate([z.T @ g + w / c, [g.sum()]])
        return value, grad

    theta = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B").x
    return mean, scale, theta[:-1], float(theta[-1])


def probabilities(params: Params, x: np.ndarray) -> np.ndarray:
    mean, scale, w, b = params
    return 1.0 / (1.0 + np.exp(-(((x - mean) / scale) @ w + b)))


def threshold_for(scores: np.ndarray, y: np.ndarray, max_false: float) -> float:
    """The highest threshold that abstains on at most ``max_false`` of the answerable (``y``
    1) scores: halfway between the allowed answerable score and the next."""
    answerable = np.sort(scores[y > 0])
    k = int(max_false * len(answerable))  # this many may fall below
    return float((answerable[k - 1] + answerable[k]) / 2) if k > 0 else float(answerable[0])


def shares(abstain: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """False abstention and abstention, as ``answer_quality.py`` reports them."""
    return _refusal_shares(abstain[y > 0].tolist(), abstain[y == 0].tolist())


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies in it."""
    try:
        return path.resolve().relative_to(DATA.parents[2]).as_posix()
    except ValueError:
        return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--write", type=Path, help="write the fitted model here")
    parser.add_argument("--c", type=float, default=C, help="inverse L2 strength")
    parser.add_argument(
        "--questions", type=Path, default=DATA / "tune_questions.jsonl", help="labelled questions"
    )
    parser.add_argument("--home", type=Path, help="a home with your knowledge base ingested")
    args = parser.parse_args()
    questions = load(args.questions)
    if not questions or not all(isinstance(q.get("question"), str) for q in questions):
        raise SystemExit(f'{args.questions}: every line needs a "question"')
    if len({q.get("answerable", True) for q in questions}) < 2:
        raise SystemExit(f"{args.questions}: needs answerable and unanswerable questions")
    if args.home is not None:
        rows, knowledge_base, embedder = asyncio.run(collect(questions, args.home, demo=False))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows, knowledge_base, embedder = asyncio.run(collect(questions, Path(tmp)))
    x = matrix(rows)
    y = np.array([1.0 if r["answerable"] else 0.0 for r in rows])
    splits = np.array([r["split"] for r in rows])
    held = np.zeros(len(rows))
    for name in dict.fromkeys(splits):
        out = splits == name
        held[out] = probabilities(fit(x[~out], y[~out], args.c), x[out])
    threshold = threshold_for(held, y, MAX_FALSE_ABSTAIN)
    params = fit(x, y, args.c)
    policy = AbstentionPolicy()
    in_build = np.array([policy.abstains(Evidence(**r["evidence"])) for r in rows])
    result: dict[str, Any] = {
        "n": len(rows),
        "answerable": int(y.sum()),
        "unanswerable": int((1 - y).sum()),
        "c": args.c,
        "threshold": round(threshold, 6),
        "held_out": shares(held < threshold, y),
        "held_out_by_split": {
            name: {"n": int(part.sum()), **shares(held[part] < threshold, y[part])}
            for name, part in ((name, splits == name) for name in dict.fromkeys(splits))
        },
        "fitted_all": shares(probabilities(params, x) < threshold, y),
        "policy_in_build": shares(in_build, y),
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if args.write:
        mean, scale, weights, bias = params
        model = AnswerabilityModel(
            features=FEATURES,
            mean=mean,
            scale=scale,
            weights=weights,
            bias=bias,
            threshold=threshold,
            knowledge_base=knowledge_base,
            embedder=embedder,
            fitted={
                "by": "benchmarks/answerability.py",
                "on": _shown(args.questions),
                **{k: result[k] for k in ("n", "answerable", "unanswerable", "c", "held_out")},
            },
        )
        args.write.write_text(json.dumps(model.to_json()) + "\n")
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
