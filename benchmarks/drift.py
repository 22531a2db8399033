"""Retokenization drift and assembly time, per real tokenizer, in one run.

    python benchmarks/drift.py --json out.json [--shared PATH] [--prompts N]

Builds N prompts per tokenizer (gpt2, mistral-7b-v0.1, phi-3-mini-4k-instruct) from chunks cut
out of the shared corpora (FastAPI docs, npm docs MDX, rich source code) and the labelled
FastAPI queries, and reports per tokenizer:

- ``drift_naive``: share of prompts whose pieces, tokenized separately and joined with blank
  lines, differ from tokenizing the joined text;
- ``drift_no_anchor``: the same with segment normal form but every segment encoded as a text
  start (no anchor);
- ``drift_segmented``: the :class:`SegmentEncoder` + :class:`PromptAssembler` scheme;
- median time to assemble a prompt from cached chunk segments (query encoded per request) vs
  encoding the whole prompt text, and their ratio.

Truncated prompts (the budget cut the only chunk) are counted and left out of the rates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from genesis.knowledge._types import Chunk, content_hash
from genesis.rag._assembly import AssembledPrompt, PromptAssembler
from genesis.tokens import HFTokenizer, TokenIds
from genesis.tokens._segments import SegmentEncoder

TOKENIZERS = ["gpt2", "mistral-7b-v0.1", "phi-3-mini-4k-instruct"]
CORPORA = [("docs/fastapi", "*.md"), ("support/npm-docs", "*.mdx"), ("code/rich", "*.py")]


def _chunks(corpora: Path, rng: random.Random) -> list[Chunk]:
    """Up to four chunk-sized cuts per file: the file start and random, often mid-line, cuts."""
    out: list[Chunk] = []
    for folder, pattern in CORPORA:
        for path in sorted((corpora / folder).rglob(pattern)):
            out += _cut(path.read_text("utf-8", "replace"), str(path.relative_to(corpora)), rng)
    return out


def _cut(text: str, source: str, rng: random.Random) -> list[Chunk]:
    out, start = [], 0
    for ordinal in range(4):
        piece = text[start : start + rng.randrange(150, 1600)]
        if piece.strip():
            heading = next((ln.lstrip("# ") for ln in piece.splitlines() if ln.startswith("#")), "")
            out.append(Chunk(f"{source}#{ordinal}", "bench", source, heading, ordinal, piece,
                             content_hash(piece)))  # fmt: skip
        start = rng.randrange(start + 1, max(start + 2, len(text)))
    return out


def _queries(corpora: Path) -> list[str]:
    lines = (corpora / "docs/fastapi/queries.jsonl").read_text("utf-8").splitlines()
    return [json.loads(line)["query"] for line in lines if line.strip()]


def _naive_drifts(inner: HFTokenizer, prompt: AssembledPrompt) -> bool:
    raw = [s.text.rstrip("\n") + "\n\n" for s in prompt.segments]
    joined = inner.encode_batch_sync(["".join(raw)])[0]
    return not np.array_equal(np.concatenate(inner.encode_batch_sync(raw)), joined)


def _no_anchor_drifts(inner: HFTokenizer, prompt: AssembledPrompt) -> bool:
    alone = inner.encode_batch_sync([s.text for s in prompt.segments])
    return not np.array_equal(np.concatenate(alone), inner.encode_batch_sync([prompt.text])[0])


async def _one_tokenizer(
    name: str, tokenizers: Path, chunks: list[Chunk], queries: list[str], n: int
) -> dict[str, Any]:
    inner = HFTokenizer.from_file(tokenizers / name)
    assembler = PromptAssembler(SegmentEncoder(inner))
    await assembler.warm_up()
    texts = [assembler.chunk_segment_text(c) for c in chunks]
    # The token cache's view: every chunk segment encoded once, then served as stored IDs.
    cached: dict[str, TokenIds] = {}
    for i in range(0, len(texts), 256):
        batch = texts[i : i + 256]
        cached.update(zip(batch, await assembler.encoder.encode_batch(batch), strict=True))
    rng = random.Random(name)
    counts = {"prompts": 0, "truncated": 0, "naive": 0, "no_anchor": 0, "segmented": 0}
    assemble_ms: list[float] = []
    encode_ms: list[float] = []
    tokens: list[int] = []
    for _ in range(n):
        picked = rng.sample(chunks, rng.randrange(1, 9))
        ids = [cached[assembler.chunk_segment_text(c)] for c in picked]
        budget = rng.choice([32_000, rng.randrange(300, 4000)])
        start = time.perf_counter()
        prompt = await assembler.assemble(rng.choice(queries), picked, ids, budget_tokens=budget)
        assemble_ms.append((time.perf_counter() - start) * 1000)
        if prompt.truncated:
            counts["truncated"] += 1
            continue
        start = time.perf_counter()
        whole = inner.encode_batch_sync([prompt.text])[0]
        encode_ms.append((time.perf_counter() - start) * 1000)
        tokens.append(len(whole))
        counts["prompts"] += 1
        counts["segmented"] += not np.array_equal(prompt.ids, whole)
        counts["naive"] += _naive_drifts(inner, prompt)
        counts["no_anchor"] += _no_anchor_drifts(inner, prompt)
    return _summary(counts, assemble_ms, encode_ms, tokens)


def _summary(
    counts: dict[str, int], assemble_ms: list[float], encode_ms: list[float], tokens: list[int]
) -> dict[str, Any]:
    done = max(counts["prompts"], 1)
    assemble, encode = statistics.median(assemble_ms), statistics.median(encode_ms)
    return {
        "prompts": counts["prompts"],
        "truncated_prompts": counts["truncated"],
        "drift_naive": counts["naive"] / done,
        "drift_no_anchor": counts["no_anchor"] / done,
        "drift_segmented": counts["segmented"] / done,
        "median_prompt_tokens": statistics.median(tokens),
        "assemble_from_cache_ms_median": round(assemble, 4),
        "encode_whole_text_ms_median": round(encode, 4),
        "encode_over_assemble_ratio": round(encode / assemble, 2),
    }


def _print(name: str, r: dict[str, Any]) -> None:
    print(
        f"{name:24s} prompts={r['prompts']:5d} drift naive={r['drift_naive']:.3f} "
        f"no-anchor={r['drift_no_anchor']:.3f} segmented={r['drift_segmented']:.3f} | "
        f"assemble {r['assemble_from_cache_ms_median']:.3f} ms vs encode "
        f"{r['encode_whole_text_ms_median']:.3f} ms (x{r['encode_over_assemble_ratio']})"
    )


async def _run(args: argparse.Namespace) -> None:
    corpora, tokenizers = args.shared / "corpora", args.shared / "tokenizers"
    chunks = _chunks(corpora, random.Random(7))
    queries = _queries(corpora)
    results = {}
    for name in TOKENIZERS:
        results[name] = await _one_tokenizer(name, tokenizers, chunks, queries, args.prompts)
        _print(name, results[name])
    meta = {"chunks": len(chunks), "queries": len(queries), "python": platform.python_version()}
    args.json.write_text(json.dumps({"meta": meta, "tokenizers": results}, indent=2) + "\n")
    print(f"wrote {args.json}")


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--shared", type=Path, default=here.parent / "shared")
    parser.add_argument("--prompts", type=int, default=500)
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
