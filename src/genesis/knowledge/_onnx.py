"""All-MiniLM-L6-v2 as an ONNX graph, written from the packaged safetensors weights.

Why ONNX Runtime: measured on the 2-core machines (benchmarks/ingest.py), its fused CPU
kernels embed passages faster than both the pure-NumPy forward pass and sentence-transformers
on torch at the same thread count, and it needs neither torch at run time (~500 MB RSS, ~4.5 s
import) nor a network. Why the graph is written here with ``onnx.helper`` instead of exported
with ``torch.onnx.export``: it is ~100 lines of plain BERT, builds in about a second from the
same weights without importing torch, and cannot drift with a torch exporter version.

The graph takes ``input_ids`` and ``attention_mask`` (int64, batch x length) and returns
``embeddings`` (float32, batch x 384): BERT encoder, mean pooling over the mask and L2
normalisation, as ``SentenceTransformer(model_dir)`` computes them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

# Bump when the graph below changes: cached files carry it in their name.
GRAPH_VERSION = 1
_OPSET = 20  # Gelu and LayerNormalization are standard ops from opset 20 / 17


class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def const(self, name: str, value: npt.ArrayLike, dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        from onnx import helper

        self._n += 1
        out = f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


def _linear(g: _Graph, x: str, raw: dict[str, Any], name: str, scale: float = 1.0) -> str:
    # Stored as torch (out, in); transposed once here so the graph computes x @ W + b.
    w = g.const(f"{name}.weight_t", raw[f"{name}.weight"].T * scale)
    b = g.const(f"{name}.bias", raw[f"{name}.bias"] * scale)
    return g.op("Add", g.op("MatMul", x, w), b)


def _layer_norm(g: _Graph, x: str, raw: dict[str, Any], name: str, eps: float) -> str:
    w, b = (
        g.const(f"{name}.weight", raw[f"{name}.weight"]),
        g.const(f"{name}.bias", raw[f"{name}.bias"]),
    )
    return g.op("LayerNormalization", x, w, b, axis=-1, epsilon=eps)


def _attention(g: _Graph, x: str, bias: str, raw: dict[str, Any], i: int, cfg: Any) -> str:
    heads, hidden = int(cfg["num_attention_heads"]), int(cfg["hidden_size"])
    head_dim = hidden // heads
    p = f"encoder.layer.{i}.attention."
    split = g.const(f"l{i}.heads_shape", [0, 0, heads, head_dim], np.int64)

    def heads_of(t: str) -> str:  # (B, L, H) -> (B, heads, L, head_dim)
        return g.op("Transpose", g.op("Reshape", t, split), perm=[0, 2, 1, 3])

    # 1/sqrt(head_dim) is folded into the query weights: one multiply fewer per layer.
    q = heads_of(_linear(g, x, raw, p + "self.query", 1.0 / float(np.sqrt(head_dim))))
    k = g.op(
        "Transpose", g.op("Reshape", _linear(g, x, raw, p + "self.key"), split), perm=[0, 2, 3, 1]
    )
    v = heads_of(_linear(g, x, raw, p + "self.value"))
    probs = g.op("Softmax", g.op("Add", g.op("MatMul", q, k), bias), axis=-1)
    ctx = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
    merged = g.op("Reshape", ctx, g.const(f"l{i}.merge_shape", [0, 0, hidden], np.int64))
    return _linear(g, merged, raw, p + "output.dense")


def _encoder_layer(g: _Graph, x: str, bias: str, raw: dict[str, Any], i: int, cfg: Any) -> str:
    p, eps = f"encoder.layer.{i}.", float(cfg["layer_norm_eps"])
    x = _layer_norm(
        g,
        g.op("Add", x, _attention(g, x, bias, raw, i, cfg)),
        raw,
        p + "attention.output.LayerNorm",
        eps,
    )
    up = g.op("Gelu", _linear(g, x, raw, p + "intermediate.dense"))
    h = _linear(g, up, raw, p + "output.dense")
    return _layer_norm(g, g.op("Add", x, h), raw, p + "output.LayerNorm", eps)


def _embeddings(g: _Graph, raw: dict[str, Any], cfg: Any) -> str:
    word = g.const("word_embeddings", raw["embeddings.word_embeddings.weight"])
    # token_type_ids are always 0 for one-segment input: folded into the position table.
    pos = (
        raw["embeddings.position_embeddings.weight"]
        + raw["embeddings.token_type_embeddings.weight"][0]
    )
    length = g.op("Shape", "input_ids", start=1, end=2)  # 1-D: [length]
    positions = g.op(
        "Slice", g.const("position_table", pos), g.const("zero_1d", [0], np.int64), length
    )
    x = g.op("Add", g.op("Gather", word, "input_ids", axis=0), positions)
    return _layer_norm(g, x, raw, "embeddings.LayerNorm", float(cfg["layer_norm_eps"]))


def _pool(g: _Graph, x: str, mask: str) -> str:
    """Mean over unmasked tokens, then L2 normalisation (sentence-transformers' clamps)."""
    m = g.op("Unsqueeze", mask, g.const("axis2", [2], np.int64))
    axis1 = g.const("axis1", [1], np.int64)
    summed = g.op("ReduceSum", g.op("Mul", x, m), axis1, keepdims=0)
    count = g.op("Max", g.op("ReduceSum", m, axis1, keepdims=0), g.const("eps9", 1e-9))
    mean = g.op("Div", summed, count)
    norm = g.op(
        "Max",
        g.op("ReduceL2", mean, g.const("axis_last", [-1], np.int64), keepdims=1),
        g.const("eps12", 1e-12),
    )
    return g.op("Div", mean, norm)


def build_model_bytes(model_dir: Path) -> bytes:
    """Serialized ONNX model of the MiniLM sentence encoder in ``model_dir``."""
    from onnx import TensorProto, helper
    from safetensors.numpy import load_file

    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    raw = {
        k: v.astype(np.float32, copy=False)
        for k, v in load_file(str(model_dir / "model.safetensors")).items()
        if v.dtype.kind == "f"
    }
    g = _Graph()
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    # Padding keys get a large negative bias, as transformers' extended attention mask does.
    neg = g.op(
        "Mul", g.op("Sub", g.const("one_f", 1.0), mask), g.const("neg", np.finfo(np.float32).min)
    )
    bias = g.op("Unsqueeze", neg, g.const("axes12", [1, 2], np.int64))
    x = _embeddings(g, raw, cfg)
    for i in range(int(cfg["num_hidden_layers"])):
        x = _encoder_layer(g, x, bias, raw, i, cfg)
    g.nodes.append(helper.make_node("Identity", [_pool(g, x, mask)], ["embeddings"]))
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "length"])
    am = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "length"])
    out = helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", "dim"])
    graph = helper.make_graph(g.nodes, "minilm_sentence_encoder", [ids, am], [out], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 10  # readable by every onnxruntime >= 1.20
    return bytes(model.SerializeToString())


def cached_model_path(model_dir: Path, fingerprint: str, cache_dir: Path) -> Path:
    """The graph for ``model_dir`` under ``cache_dir``, written once if missing.

    The name carries the model fingerprint and ``GRAPH_VERSION``, so another model or a
    changed graph never reuses a stale file. The build runs in a child process: it holds
    ~4 copies of the 90 MB of weights at its peak (arrays, protobuf, serialized bytes), which
    the serving process would otherwise keep as RSS (measured: 300 MB vs 200 MB after load).
    """
    path = cache_dir / f"{fingerprint}-onnx{GRAPH_VERSION}.onnx"
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "genesis.knowledge._onnx", str(model_dir), str(path)]
    # The child imports this very genesis, wherever the parent found it.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, env=env)
    if done.returncode != 0 or not path.is_file():
        raise OSError(f"building the ONNX graph failed: {done.stderr.strip()[-2000:]}")
    logger.info("wrote ONNX graph of %s to %s", fingerprint, path)
    return path


def write_model(model_dir: Path, path: Path) -> None:
    """Build the graph and write it to ``path`` atomically (concurrent writers are safe:
    each renames a complete file over the other's)."""
    data = build_model_bytes(model_dir)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from workers run as other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


if __name__ == "__main__":  # the child process of `cached_model_path`
    write_model(Path(sys.argv[1]), Path(sys.argv[2]))
