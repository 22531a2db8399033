"""Top-5 cosine search over 10,000 x 384 random unit vectors, three ways, in one run.

    python benchmarks/vector_search.py --json out.json [--n 10000] [--queries 300]

Compares the embedded store (exact NumPy at this size, its default), the embedded store
forced onto its usearch HNSW index, NumPy brute force and Qdrant local mode; also a
payload-filtered query on the embedded store and Qdrant, and how much of the exact top-5
each store finds. Prints medians and ratios, writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import AsyncQdrantClient

from genesis.knowledge import EmbeddedVectorStore, QdrantVectorStore

TOP_K = 5


def _unit(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


async def _median_ms(fn: Callable[[np.ndarray], Awaitable[Any]], queries: np.ndarray) -> float:
    for q in queries[:20]:  # warm-up
        await fn(q)
    times = []
    for q in queries:
        start = time.perf_counter()
        await fn(q)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _brute_force(matrix: np.ndarray) -> Callable[[np.ndarray], Awaitable[list[int]]]:
    async def search(q: np.ndarray) -> list[int]:
        scores = matrix @ q
        best = np.argpartition(-scores, TOP_K)[:TOP_K]
        return best[np.argsort(-scores[best])].tolist()

    return search


async def run(n: int, dim: int, n_queries: int) -> dict[str, Any]:
    vectors, queries = _unit(n, dim, 0), _unit(n_queries, dim, 1)
    ids = [f"doc-{i}" for i in range(n)]
    payloads = [{"source": f"file{i % 10}.md"} for i in range(n)]
    where = {"source": "file3.md"}
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        embedded = EmbeddedVectorStore(Path(tmp) / "exact")
        await embedded.upsert("bench", ids, vectors, payloads)
        hnsw = EmbeddedVectorStore(Path(tmp) / "hnsw", exact_below=1)
        await hnsw.upsert("bench", ids, vectors, payloads)
        qdrant = QdrantVectorStore(AsyncQdrantClient(location=":memory:"))
        await qdrant.upsert("bench", ids, vectors, payloads)
        brute = _brute_force(vectors)
        results["numpy_brute_force_ms"] = await _median_ms(brute, queries)
        results["embedded_store_ms"] = await _median_ms(
            lambda q: embedded.search("bench", q, TOP_K), queries
        )
        results["embedded_store_hnsw_ms"] = await _median_ms(
            lambda q: hnsw.search("bench", q, TOP_K), queries
        )
        results["qdrant_local_ms"] = await _median_ms(
            lambda q: qdrant.search("bench", q, TOP_K), queries
        )
        results["embedded_store_filtered_ms"] = await _median_ms(
            lambda q: embedded.search("bench", q, TOP_K, where=where), queries
        )
        results["qdrant_local_filtered_ms"] = await _median_ms(
            lambda q: qdrant.search("bench", q, TOP_K, where=where), queries[:50]
        )
        overlap = {"embedded_store": 0, "embedded_store_hnsw": 0, "qdrant_local": 0}
        for q in queries:
            exact = {f"doc-{i}" for i in await brute(q)}
            for name, store in (
                ("embedded_store", embedded),
                ("embedded_store_hnsw", hnsw),
                ("qdrant_local", qdrant),
            ):
                overlap[name] += len(exact & {h.id for h in await store.search("bench", q, TOP_K)})
        await embedded.aclose()
        await hnsw.aclose()
        await qdrant.aclose()
    base = results["embedded_store_ms"]
    return {
        "benchmark": "vector_search",
        "n": n,
        "dim": dim,
        "queries": n_queries,
        "top_k": TOP_K,
        "machine": platform.platform(),
        "median_ms": results,
        "ratio_to_embedded": {k: round(v / base, 2) for k, v in results.items()},
        "top5_overlap_with_exact": {k: v / (TOP_K * n_queries) for k, v in overlap.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    out = asyncio.run(run(args.n, args.dim, args.queries))
    width = max(len(k) for k in out["median_ms"])
    print(f"top-{TOP_K} over {args.n} x {args.dim}, median of {args.queries} queries")
    for name, ms in out["median_ms"].items():
        ratio = out["ratio_to_embedded"][name]
        print(f"  {name:<{width}}  {ms:8.3f} ms  x{ratio:<7} (vs embedded store)")
    print(f"  top-5 overlap with exact search: {out['top5_overlap_with_exact']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
