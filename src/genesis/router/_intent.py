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

Beside the MiniLM vector, the classifier reads the request's words (`intent_features`): a
hashed bag of its terms and adjacent term pairs ("review", "write tests", "speed up"), and
whether code was pasted into it. Trained on the rounds written before each of the last six
routing splits and scored on the split (``benchmarks/router_intent.py``), the router routed
0.918 of their 720 tasks with the words against 0.904 without (the classifier alone: 0.924
against 0.904).

The examples are the packaged ``examples.jsonl`` (the labelled routing tasks of
``benchmarks/data/answer_quality``'s tuning split) and each profile's own examples; a
seventh agent is trained from its profile's examples (add more lines to a file given as
``router.examples_file`` for better recall). Training is plain NumPy (full-batch gradient
descent, L2 1e-4, 2,000 steps) and its weights are cached on disk with
the example vectors, keyed by every example, its label and the embedder.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from genesis.errors import ConfigError
from genesis.llm import terms

_F32 = npt.NDArray[np.float32]

PACKAGED_EXAMPLES = Path(__file__).with_name("examples.jsonl")
L2 = 1e-4
# Trained to 2,000 steps rather than 1,000, the router routed 0.937 of the nine routing rounds'
# 1,080 tasks against 0.934 (no round worse; the classifier alone 0.934 against 0.929), with
# ``benchmarks/router_intent.py``.
STEPS = 2000
RATE = 2.0
# The hashed bag of words: its width (collisions are rare among a few thousand terms) and its
# weight beside the unit MiniLM vector (1.0 and 1.25 did best on the routing rounds; 2.0 and
# 3.0 let words outweigh meaning).
BAG_DIM = 2048
BAG_WEIGHT = 1.0
# The bag's entry for "code was pasted into the request".
_CODE_TOKEN = "\x00code"


def bag_of_terms(request: str, code: bool) -> _F32:
    """A unit vector of ``request``'s terms and adjacent term pairs, hashed into BAG_DIM
    buckets (CRC-32: the same on every run), with one more entry when ``code`` was pasted
    into the task (both from `genesis.router._request.read_request`)."""
    words = terms(request)
    tokens = [*words, *(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))]
    if code:
        tokens.append(_CODE_TOKEN)
    bag = np.zeros(BAG_DIM, dtype=np.float32)
    for token in tokens:
        bag[zlib.crc32(token.encode("utf-8")) % BAG_DIM] += 1.0
    norm = float(np.linalg.norm(bag))
    return bag / norm if norm else bag


def intent_features(vector: _F32, bag: _F32) -> _F32:
    """What the classifier reads: a request's unit MiniLM vector, then its weighted bag of
    terms (`bag_of_terms`)."""
    flat = np.asarray(vector, dtype=np.float32).reshape(-1)
    return np.concatenate([flat, BAG_WEIGHT * bag]).astype(np.float32)


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
    """Softmax regression from a request's features (`intent_features`) to the agents'
    probabilities."""

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
    def fit(
        cls,
        names: Sequence[str],
        vectors: _F32,
        labels: Sequence[str],
        *,
        dense_dims: int | None = None,
    ) -> IntentClassifier:
        """Train on ``vectors`` (one row of `intent_features` per request) labelled with agent
        names. Columns past ``dense_dims`` (the bag of terms: a few dozen nonzeros in 2,048)
        are multiplied as sparse entries: the same weights as a dense product (a test checks
        it), without multiplying the bag's zeros."""
        index = {name: i for i, name in enumerate(names)}
        y = np.array([index[label] for label in labels])
        n, dim = vectors.shape
        k = len(names)
        d = dim if dense_dims is None else dense_dims
        targets = np.eye(k, dtype=np.float64)[y]
        x = vectors[:, :d].astype(np.float64)
        rows, cols = np.nonzero(vectors[:, d:])
        vals = vectors[:, d:][rows, cols].astype(np.float64)
        sparse = _SparseColumns(rows, cols, vals, n, dim - d, k)
        w = np.zeros((dim, k))
        b = np.zeros(k)
        for _ in range(STEPS):
            z = x @ w[:d] + sparse.times(w[d:]) + b
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            grad = (p - targets) / n
            step = np.vstack([x.T @ grad, sparse.transposed_times(grad)])
            w -= RATE * (step + L2 * w)
            b -= RATE * grad.sum(axis=0)
        return cls(names, np.vstack([w, b[None, :]]).astype(np.float32))

    def probabilities(self, vector: _F32) -> dict[str, float]:
        z = vector.astype(np.float32) @ self._w + self._b
        z = z - z.max()
        p = np.exp(z)
        p /= p.sum()
        return {name: float(p[i]) for i, name in enumerate(self.names)}


class _SparseColumns:
    """An ``(n, m)`` matrix given by its nonzero entries, for products with ``k`` dense
    columns (the flat indices of each product's sums are worked out once)."""

    def __init__(self, rows: npt.NDArray[np.intp], cols: npt.NDArray[np.intp],
                 vals: npt.NDArray[np.float64], n: int, m: int, k: int) -> None:  # fmt: skip
        self._rows, self._cols, self._vals = rows, cols, vals[:, None]
        self._n, self._m, self._k = n, m, k
        self._into_rows = (rows[:, None] * k + np.arange(k)).ravel()
        self._into_cols = (cols[:, None] * k + np.arange(k)).ravel()

    def times(self, w: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``matrix @ w`` for ``w`` of shape ``(m, k)``."""
        parts = (self._vals * w[self._cols]).ravel()
        sums = np.bincount(self._into_rows, parts, self._n * self._k)
        return sums.astype(np.float64, copy=False).reshape(self._n, self._k)

    def transposed_times(self, g: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``matrix.T @ g`` for ``g`` of shape ``(n, k)``."""
        parts = (self._vals * g[self._rows]).ravel()
        sums = np.bincount(self._into_cols, parts, self._m * self._k)
        return sums.astype(np.float64, copy=False).reshape(self._m, self._k)
