"""The MiniLM embedder (ONNX Runtime and NumPy) matches sentence-transformers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genesis.errors import RetrievalError
from genesis.knowledge import Embedder, MiniLMEmbedder, default_model_dir

TEXTS = [
    "How do I declare a path parameter in FastAPI?",
    "hello",
    "",
    "   ",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé façade — naïve café, 日本語のテキスト, emoji 🚀",
    "def add(a: int, b: int) -> int:\n    return a + b",
    "```bash\npip install 'fastapi[standard]'\n```",
    "npm install --save-dev typescript@5",
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '1 day';",
    "Dependency injection lets path operations declare what they need.",
    "CORS (Cross-Origin Resource Sharing) refers to situations when a frontend...",
    "a " * 400,  # far beyond 256 tokens: truncated like sentence-transformers
    "Background tasks run after returning a response. " * 30,
    "12345 67890 3.14159 2.71828",
    "<abbr title='also known as'>conversion</abbr> and <a href='x'>links</a>",
    "OAuth2 with Password (and hashing), Bearer with JWT tokens",
    "Wie deklariere ich Pfadparameter?",
    "UPPER CASE TEXT IS LOWERCASED BY THE TOKENIZER",
    "tab\tseparated\tvalues\nand\nnew lines",
]


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    model = MiniLMEmbedder()
    model.warm_up()
    return model


def test_construction_is_light_and_checks_the_folder(tmp_path: Path) -> None:
    with pytest.raises(RetrievalError, match=str(tmp_path)):
        MiniLMEmbedder(tmp_path)
    model = MiniLMEmbedder()
    assert isinstance(model, Embedder)
    assert model.dim == 384
    assert model.tokenizer_path == default_model_dir() / "tokenizer.json"
    assert model.fingerprint == MiniLMEmbedder().fingerprint
    assert model.fingerprint.startswith("minilm")


def test_empty_batch_has_the_right_shape() -> None:
    out = MiniLMEmbedder().embed_documents([])
    assert out.shape == (0, 384) and out.dtype == np.float32


@pytest.mark.slow
def test_matches_sentence_transformers(embedder: MiniLMEmbedder) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(default_model_dir()), device="cpu")
    expected = reference.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    ours = embedder.embed_documents(TEXTS)
    cosine = (ours * expected).sum(axis=1)
    assert cosine.min() >= 0.9999, list(zip(TEXTS, cosine.tolist(), strict=True))


@pytest.mark.slow
def test_vectors_are_unit_norm_and_independent_of_the_batch(embedder: MiniLMEmbedder) -> None:
    batch = embedder.embed_documents(TEXTS)
    assert batch.shape == (len(TEXTS), 384) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    alone = embedder.embed_documents([TEXTS[0]])[0]
    np.testing.assert_allclose(alone, batch[0], atol=1e-5)


@pytest.mark.slow
def test_query_embeddings_are_cached_and_read_only(embedder: MiniLMEmbedder) -> None:
    first = embedder.embed_query(TEXTS[4])
    assert embedder.embed_query(TEXTS[4]) is first
    assert not first.flags.writeable
    np.testing.assert_allclose(first, embedder.embed_documents([TEXTS[4]])[0], atol=1e-6)


@pytest.mark.slow
def test_similar_texts_score_higher(embedder: MiniLMEmbedder) -> None:
    query = embedder.embed_query("how to declare path parameters")
    docs = embedder.embed_documents(
        ["You can declare path parameters with Python format strings.", "Bake the cake at 180 C."]
    )
    assert float(docs[0] @ query) > float(docs[1] @ query) + 0.3


@pytest.mark.slow
def test_production_code_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "from genesis.knowledge import KnowledgeBase, MiniLMEmbedder\n"
        "MiniLMEmbedder().embed_query('hello')\n"
        "bad = [m for m in ('torch', 'sentence_transformers', 'qdrant_client', 'scipy')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_bad_runtime_settings_are_refused() -> None:
    with pytest.raises(RetrievalError, match="embedder settings"):
        MiniLMEmbedder(runtime="torch")  # type: ignore[arg-type]
    with pytest.raises(RetrievalError, match="embedder settings"):
        MiniLMEmbedder(threads=0)


def test_query_cache_lookup_and_store_never_compute() -> None:
    model = MiniLMEmbedder(query_cache_size=2)
    assert model.cached_query("a") is None
    stored = model.cache_query("a", np.ones(384, dtype=np.float32))
    assert model.cached_query("a") is stored and not stored.flags.writeable
    model.cache_query("b", np.zeros(384, dtype=np.float32))
    model.cached_query("a")  # "a" is now the most recent: "b" is evicted next
    model.cache_query("c", np.zeros(384, dtype=np.float32))
    assert model.cached_query("b") is None and model.cached_query("a") is stored
    assert model.embed_query("a") is stored  # embed_query reads the same cache


@pytest.mark.slow
def test_onnx_graph_is_cached_by_fingerprint_and_reused(tmp_path: Path) -> None:
    first = MiniLMEmbedder(cache_dir=tmp_path)
    vector = first.embed_documents(["cached graph"])[0]
    (graph,) = tmp_path.glob("*.onnx")
    assert graph.name.startswith(first.fingerprint)
    stamp = graph.stat().st_mtime_ns
    second = MiniLMEmbedder(cache_dir=tmp_path)
    np.testing.assert_allclose(second.embed_documents(["cached graph"])[0], vector, atol=1e-6)
    assert graph.stat().st_mtime_ns == stamp and list(tmp_path.iterdir()) == [graph]


@pytest.mark.slow
def test_numpy_and_onnx_runtimes_agree(embedder: MiniLMEmbedder) -> None:
    assert embedder.runtime == "onnx"
    numpy_model = MiniLMEmbedder(runtime="numpy")
    cosine = (numpy_model.embed_documents(TEXTS) * embedder.embed_documents(TEXTS)).sum(axis=1)
    assert cosine.min() >= 0.9999
    assert numpy_model.fingerprint == embedder.fingerprint


@pytest.mark.slow
def test_numpy_runtime_pins_blas_threads() -> None:
    code = (
        "from threadpoolctl import threadpool_info\n"
        "from genesis.knowledge import MiniLMEmbedder\n"
        "MiniLMEmbedder(runtime='numpy', threads=1).warm_up()\n"
        "pools = [p for p in threadpool_info() if p['user_api'] == 'blas']\n"
        "assert pools and all(p['num_threads'] == 1 for p in pools), pools\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)
