"""Does the knowledge base answer the question? A model fitted on one knowledge base.

The evidence features (`genesis.rag.Evidence`) say how well the retrieved sentences match a
question, but a question about a feature the product lacks, asked next to features it
documents, matches as well as an informal question the articles do answer. What tells them
apart is often the question itself: which part of the product it is about, and how it asks.
An :class:`AnswerabilityModel` is a logistic regression over the evidence features and the
question's MiniLM vector, fitted on a knowledge base's labelled questions, answerable and not
(``benchmarks/answerability.py``, on the tuning split only). It knows one knowledge base: it
applies only while the ingested chunks are the ones it was fitted on (``knowledge_base``, see
`genesis.rag.vocabulary`) and the question vectors come from the same embedding model
(``embedder``); otherwise the linear `AbstentionPolicy` decides, as before.

The packaged model (``answerability.json`` beside this module) was fitted on the demo
knowledge base's tuning questions; its ``fitted`` entry records on what, and what leaving
each written split out gave.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from genesis.errors import ConfigError

from ._evidence import Evidence

PACKAGED_MODEL = Path(__file__).resolve().parent / "answerability.json"
_F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)  # arrays have no single truth value: compare by identity
class AnswerabilityModel:
    """``P(answerable) = 1 / (1 + exp(-(bias + weights . (x - mean) / scale)))`` with ``x``
    the evidence's ``features`` followed by the question's vector; abstain below
    ``threshold``."""

    features: tuple[str, ...]
    mean: _F64
    scale: _F64
    weights: _F64
    bias: float
    threshold: float
    knowledge_base: str
    embedder: str
    fitted: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        size = len(self.mean)
        if not (len(self.scale) == len(self.weights) == size > len(self.features)):
            raise ConfigError(
                f"answerability model: mean, scale and weights must have one value per "
                f"feature and vector dimension (got {len(self.mean)}, {len(self.scale)}, "
                f"{len(self.weights)} for {len(self.features)} features)"
            )
        if not all(np.isfinite(a).all() for a in (self.mean, self.scale, self.weights)):
            raise ConfigError("answerability model: a weight is not a finite number")
        if (self.scale <= 0).any():
            raise ConfigError("answerability model: every scale must be positive")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"answerability model: threshold {self.threshold} not in [0, 1]")

    @property
    def dim(self) -> int:
        """The question vector's dimension."""
        return len(self.mean) - len(self.features)

    def applies(self, knowledge_base: str, embedder: str) -> bool:
        """Whether this model was fitted on these chunks and this embedding model."""
        return self.knowledge_base == knowledge_base and self.embedder == embedder

    def probability(self, evidence: Evidence, query_vector: npt.ArrayLike) -> float:
        """How likely it is that the knowledge base answers the question."""
        vector = np.asarray(query_vector, dtype=np.float64).reshape(-1)
        if len(vector) != self.dim:
            raise ValueError(f"question vector has {len(vector)} dimensions, model {self.dim}")
        x = np.concatenate([[float(getattr(evidence, f)) for f in self.features], vector])
        z = self.bias + float(((x - self.mean) / self.scale) @ self.weights)
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "mean": [round(float(v), 7) for v in self.mean],
            "scale": [round(float(v), 7) for v in self.scale],
            "weights": [round(float(v), 7) for v in self.weights],
            "bias": round(self.bias, 7),
            "threshold": round(self.threshold, 6),
            "knowledge_base": self.knowledge_base,
            "embedder": self.embedder,
            "fitted": self.fitted,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnswerabilityModel:
        known = set(Evidence.__dataclass_fields__)
        try:
            features = tuple(str(f) for f in data["features"])
            unknown = [f for f in features if f not in known]
            if unknown:
                raise ConfigError(f"answerability model: unknown evidence feature(s) {unknown}")
            return cls(
                features=features,
                mean=_array(data["mean"]),
                scale=_array(data["scale"]),
                weights=_array(data["weights"]),
                bias=float(data["bias"]),
                threshold=float(data["threshold"]),
                knowledge_base=str(data["knowledge_base"]),
                embedder=str(data["embedder"]),
                fitted=dict(data.get("fitted", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"answerability model: malformed ({type(exc).__name__}: {exc})"
            ) from exc

    @classmethod
    def load(cls, path: Path) -> AnswerabilityModel:
        """Read a model written by ``benchmarks/answerability.py`` (blocking)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"answerability model {path}: cannot read ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"answerability model {path}: not a JSON object")
        try:
            return cls.from_json(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc


def _array(values: Sequence[float]) -> _F64:
    return np.asarray([float(v) for v in values], dtype=np.float64)
