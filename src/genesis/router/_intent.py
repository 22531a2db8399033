"""An intent classifier for the router, trained on labelled requests.

Card similarity (a request's MiniLM cosine to each agent's description and examples) tells a
request's topic better than its intent: on three held-out splits of routing tasks, written by
three different authors, the card router scored 0.870, 0.842 and 0.750 while scoring over
0.95 on its tuning tasks. A multinomial logistic regression over the same MiniLM vectors,
trained on the labelled tasks, learns which directions of the embedding separate the
intents; measured inside the tuning split by ``benchmarks/router_intent.py`` (trained on
the tasks written before a split, scored on the split, with the router's rules and evidence
kept around it): 0.900 against the card router's 0.842 on the 7th split, 0.842 against
0.750 on the 8th. Its probabilities replace the card similarity as the router's scores; the cosine
still decides what is off-topic.

The examples are the packaged ``examples.jsonl`` (the labelled routing tasks of
``benchmarks/data/answer_quality``'s tuning split) and each profile's own examples; a
seventh agent is trained from its profile's examples (add more lines to a file given as
``router.examples_file`` for better recall). Training is plain NumPy (full-batch gradient
descent, L2 1e-4, 1,000 steps) and its weights are cached on disk with
the example vectors, keyed by every example, its label and the embedder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from genesis.errors import ConfigError

_F32 = npt.NDArray[np.float32]

PACKAGED_EXAMPLES = Path(__file__).with_name("examples.jsonl")
L2 = 1e-4
STEPS = 1000
RATE = 2.0


def load_examples(path: str | Path | None, agents: Sequence[str]) -> list[tuple[str, str]]:
    """``(task, agent)`` pairs from a JSON-lines file of ``{"task", "agent"}`` (None: the
    packaged one), keeping only the configured ``agents``."""
    source = Path(path) if path is not None else PACKAGED_EXAMPLES
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"router.examples_file: cannot read {source}: {exc}") from exc
    known = set(agents)
    out: list[tuple[str, str]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            task, agent = item["task"], item["agent"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"router.examples_file {source}:{number}: not a {{'task', 'agent'}} line: {exc}"
            ) from exc
        if isinstance(task, str) and task.strip() and agent in known:
            out.append((task, agent))
    return out


class IntentClassifier:
    """Softmax regression from a unit request vector to the agents' probabilities."""

    def __init__(self, names: Sequence[str], weights: _F32) -> None:
        if weights.ndim != 2 or weights.shape[1] != len(names):
            raise ValueError(f"weights of shape {weights.shape} for {len(names)} agents")
        self.names = list(names)
        self._w = weights[:-1]
        self._b = weights[-1]

    @property
    def weights(self) -> _F32:
        """``(dim + 1, agents)``: the weights with the bias as the last row."""
        return np.vstack([self._w, self._b[None, :]]).astype(np.float32)

    @classmethod
    def fit(cls, names: Sequence[str], vectors: _F32, labels: Sequence[str]) -> IntentClassifier:
        """Train on ``vectors`` (rows, unit length) labelled with agent names."""
        index = {name: i for i, name in enumerate(names)}
        y = np.array([index[label] for label in labels])
        n, dim = vectors.shape
        k = len(names)
        targets = np.eye(k, dtype=np.float64)[y]
        x = vectors.astype(np.float64)
        w = np.zeros((dim, k))
        b = np.zeros(k)
        for _ in range(STEPS):
            z = x @ w + b
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            grad = (p - targets) / n
            w -= RATE * (x.T @ grad + L2 * w)
            b -= RATE * grad.sum(axis=0)
        return cls(names, np.vstack([w, b[None, :]]).astype(np.float32))

    def probabilities(self, vector: _F32) -> dict[str, float]:
        z = vector.astype(np.float32) @ self._w + self._b
        z = z - z.max()
        p = np.exp(z)
        p /= p.sum()
        return {name: float(p[i]) for i, name in enumerate(self.names)}
