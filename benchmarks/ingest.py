"""Ingest the FastAPI docs through Genesis, then embed the same chunks with sentence-transformers.

    python benchmarks/ingest.py --json out.json [--threads N] [--corpus DIR]

In one process: (1) ``KnowledgeBase.embedded(...).ingest`` of ``../shared/corpora/docs/fastapi``
into a fresh temporary home (chunking, MiniLM on ONNX Runtime, vector store, catalog, BM25),
timed after the embedder's warm-up; (2) ``SentenceTransformer(...).encode`` (torch, CPU, the
same model folder, batch size 32) of the texts Genesis embeds (``embedding_text`` of each
chunk, checked equal to the knowledge base's after ingestion): half of them (even rows) before
the ingestion and half (odd rows) after it, so that a load change on this shared machine
weighs on both sides; (3) Genesis's embedder alone on all those texts in one call. Both
sides get ``--threads`` cores (default: all of them), each the way it runs best: Genesis as
it serves, an executor of that many workers with one ONNX Runtime thread each (ingestion
embeds a group's shares in parallel); sentence-transformers with
``torch.set_num_threads``. BLAS is pinned to one thread. Writes ``{"chunks", "genesis_chunks_per_s",
"st_chunks_per_s", "ratio", ...}``; ``ratio`` is full Genesis ingestion (everything, not only
the embedding) over sentence-transformers' encoding alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from genesis._executor import CpuExecutor, install_executor
from genesis.knowledge import (
    KnowledgeBase,
    MiniLMEmbedder,
    chunk_text,
    embedding_text,
    iter_source_files,
    pin_blas_threads,
)
from genesis.tokens import HFTokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GENESIS_SHARED_DIR", REPO.parent / "shared"))
BATCH = 32
CHUNK_TOKENS = 256  # KnowledgeBase's default


def chunk_texts(corpus: Path, embedder: MiniLMEmbedder) -> list[str]:
    """What ``KnowledgeBase.embedded`` will embed for ``corpus`` (same chunker and counter)."""
    counter = HFTokenizer.from_file(embedder.tokenizer_path, name="all-minilm-l6-v2")
    texts = []
    for rel, path in iter_source_files(corpus):
        chunks = chunk_text(
            path.read_text(encoding="utf-8"),
            source=rel,
            collection="fastapi",
            max_tokens=CHUNK_TOKENS,
            count_tokens=counter.count,
        )
        texts += [embedding_text(c) for c in chunks]
    return texts


async def genesis_ingest(corpus: Path, home: Path, threads: int) -> dict[str, Any]:
    """Real ingestion into ``home``; returns timings and the chunk texts it embedded."""
    embedder = MiniLMEmbedder(threads=1, cache_dir=home / "models")
    install_executor(CpuExecutor(threads))
    started = time.perf_counter()
    embedder.warm_up()  # builds the ONNX graph in this fresh home (once per machine)
    warm_s = time.perf_counter() - started
    async with KnowledgeBase.embedded(home / "kb", embedder, chunk_tokens=CHUNK_TOKENS) as kb:
        started = time.perf_counter()
        report = await kb.ingest(corpus, "fastapi")
        ingest_s = time.perf_counter() - started
        texts = [embedding_text(c) for c in await kb.all_chunks("fastapi")]
    return {
        "texts": texts,
        "embedder": embedder,
        "files": report.files_added,
        "warm_up_s": round(warm_s, 2),
        "ingest_s": round(ingest_s, 2),
    }


class SentenceTransformers:
    """sentence-transformers on torch (CPU); model load and a warm-up batch are not timed."""

    def __init__(self, threads: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.torch_version = str(torch.__version__)
        self.model = SentenceTransformer(str(MiniLMEmbedder().model_dir), device="cpu")
        self.seconds = 0.0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.model.encode(texts[:BATCH], batch_size=BATCH)  # warm-up, like Genesis's warm_up
        started = time.perf_counter()
        out = self.model.encode(
            texts, batch_size=BATCH, convert_to_numpy=True, normalize_embeddings=True
        )
        self.seconds += time.perf_counter() - started
        return np.asarray(out)


def run(corpus: Path, threads: int) -> dict[str, Any]:
    pin_blas_threads(1)
    texts = chunk_texts(corpus, MiniLMEmbedder())
    st = SentenceTransformers(threads)
    st_even = st.encode(texts[0::2])
    with tempfile.TemporaryDirectory(prefix="genesis-ingest-") as home:
        ours = asyncio.run(genesis_ingest(corpus, Path(home), threads))
    if sorted(ours.pop("texts")) != sorted(texts):
        raise SystemExit("the knowledge base embedded other texts than chunk_texts() predicted")
    st_odd = st.encode(texts[1::2])
    embedder = ours.pop("embedder")
    started = time.perf_counter()
    vectors = embedder.embed_documents(texts)
    embed_s = time.perf_counter() - started
    cosine = np.concatenate(
        [(vectors[0::2] * st_even).sum(axis=1), (vectors[1::2] * st_odd).sum(axis=1)]
    )
    n = len(texts)
    return {
        "chunks": n,
        "genesis_chunks_per_s": round(n / ours["ingest_s"], 2),
        "st_chunks_per_s": round(n / st.seconds, 2),
        "ratio": round(st.seconds / ours["ingest_s"], 3),
        "genesis_embed_only_chunks_per_s": round(n / embed_s, 2),
        "embed_only_ratio": round(st.seconds / embed_s, 3),
        "st_s": round(st.seconds, 2),
        "embed_only_s": round(embed_s, 2),
        **ours,
        "min_cosine_vs_st": round(float(cosine.min()), 6),
        "threads": threads,
        "runtime": f"onnxruntime (Genesis) vs torch {st.torch_version} (sentence-transformers)",
        "batch_size": BATCH,
        "corpus": str(corpus),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "openblas_num_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="cores for each side"
    )
    parser.add_argument("--corpus", type=Path, default=SHARED / "corpora" / "docs" / "fastapi")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        raise SystemExit(f"corpus not found: {args.corpus} (set GENESIS_SHARED_DIR)")
    out = run(args.corpus, args.threads)
    print(
        f"{out['chunks']} chunks, {args.threads} thread(s): Genesis ingest "
        f"{out['genesis_chunks_per_s']}/s (embedding alone {out['genesis_embed_only_chunks_per_s']}"
        f"/s), sentence-transformers {out['st_chunks_per_s']}/s; ratio {out['ratio']}, "
        f"min cosine {out['min_cosine_vs_st']}"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
