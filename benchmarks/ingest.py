"""Ingest the FastAPI docs through Genesis, then embed the same chunks with sentence-transformers.

    python benchmarks/ingest.py --json out.json [--threads N] [--corpus DIR]

In one process: (1) ``KnowledgeBase.embedded(...).ingest`` of ``../shared/corpora/docs/fastapi``
into a fresh temporary home (chunking, MiniLM on ONNX Runtime, vector store, catalog, BM25),
timed after the embedder's warm-up; (2) Genesis's embedder alone on those chunk texts
(``embedding_text``), batch 32; (3) ``SentenceTransformer(...).encode`` of the same texts
(torch, CPU, the same model folder, batch size 32). Both runtimes get ``--threads`` threads
(ONNX Runtime intra-op threads; ``torch.set_num_threads``); BLAS is pinned to the same number.
Writes ``{"chunks", "genesis_chunks_per_s", "st_chunks_per_s", "ratio", ...}``; ``ratio`` is
full Genesis ingestion over sentence-transformers' encoding alone.
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

from genesis.knowledge import KnowledgeBase, MiniLMEmbedder, embedding_text, pin_blas_threads

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GENESIS_SHARED_DIR", REPO.parent / "shared"))
BATCH = 32


async def genesis_ingest(corpus: Path, home: Path, threads: int) -> dict[str, Any]:
    """Real ingestion into ``home``; returns timings and the chunk texts it embedded."""
    embedder = MiniLMEmbedder(threads=threads, cache_dir=home / "models")
    started = time.perf_counter()
    embedder.warm_up()  # builds the ONNX graph in this fresh home (once per machine)
    warm_s = time.perf_counter() - started
    async with KnowledgeBase.embedded(home / "kb", embedder) as kb:
        started = time.perf_counter()
        report = await kb.ingest(corpus, "fastapi")
        ingest_s = time.perf_counter() - started
        texts = [embedding_text(c) for c in await kb.all_chunks("fastapi")]
    started = time.perf_counter()
    ours = np.concatenate(
        [embedder.embed_documents(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]
    )
    embed_s = time.perf_counter() - started
    return {
        "texts": texts,
        "vectors": ours,
        "files": report.files_added,
        "warm_up_s": round(warm_s, 2),
        "ingest_s": round(ingest_s, 2),
        "embed_only_s": round(embed_s, 2),
    }


def st_encode(texts: list[str], threads: int) -> tuple[np.ndarray, float, str]:
    """sentence-transformers on torch (CPU) over ``texts``; model load is not timed."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(MiniLMEmbedder().model_dir), device="cpu")
    model.encode(texts[:BATCH], batch_size=BATCH)  # warm-up, like Genesis's warm_up
    started = time.perf_counter()
    vectors = model.encode(
        texts, batch_size=BATCH, convert_to_numpy=True, normalize_embeddings=True
    )
    return vectors, time.perf_counter() - started, str(torch.__version__)


def run(corpus: Path, threads: int) -> dict[str, Any]:
    pin_blas_threads(threads)
    with tempfile.TemporaryDirectory(prefix="genesis-ingest-") as home:
        ours = asyncio.run(genesis_ingest(corpus, Path(home), threads))
    texts = ours.pop("texts")
    st_vectors, st_s, torch_version = st_encode(texts, threads)
    cosine = (ours.pop("vectors") * st_vectors).sum(axis=1)
    n = len(texts)
    return {
        "chunks": n,
        "genesis_chunks_per_s": round(n / ours["ingest_s"], 2),
        "genesis_embed_only_chunks_per_s": round(n / ours["embed_only_s"], 2),
        "st_chunks_per_s": round(n / st_s, 2),
        "ratio": round(st_s / ours["ingest_s"], 3),
        "embed_only_ratio": round(st_s / ours["embed_only_s"], 3),
        "st_s": round(st_s, 2),
        **ours,
        "min_cosine_vs_st": round(float(cosine.min()), 6),
        "threads": threads,
        "runtime": "onnxruntime (Genesis) vs torch " + torch_version + " (sentence-transformers)",
        "batch_size": BATCH,
        "corpus": str(corpus),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "openblas_num_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--threads", type=int, default=1, help="threads for both runtimes")
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
