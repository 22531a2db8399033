"""KV-cache reuse of Genesis prompts, in a faithful simulation of vLLM's block prefix cache.

    python benchmarks/prefix_reuse.py --json out.json [--shared PATH] [--requests 10000]

Workload: the FastAPI docs in ``../shared/corpora/docs/fastapi`` (read there, never copied),
cut by Genesis's own chunker (256-token chunks, Mistral-7B tokenizer), retrieved with Genesis's
BM25 index (top 5). Question intents are the 60 labelled queries of the corpus plus one "how
does X work" question per distinct section heading; each request draws an intent from a Zipf
law (skew 0.8 or 1.2, ranks shuffled with a fixed seed) and one of ``--phrasings`` wordings of
it (real users ask one thing in several ways; with ``--phrasings 1`` every repeat is exact).

Each prompt goes through the real :class:`PromptAssembler` (Genesis layout: system, chunks in a
stable (source, ordinal) order, then the question). The conventional layout is built from the
same token pieces: system, question, then the chunks by score.

The cache model follows vLLM v1 (``vllm/v1/core/kv_cache_utils.py``, ``block_pool.py``,
``kv_cache_manager.py``): 16-token blocks keyed by chained SHA-256 block hashes
(:func:`genesis.llm.block_hashes`, the same scheme), full blocks only, the hit is the longest
run of cached leading blocks and never the whole prompt (the last token is always computed),
a fixed number of blocks per replica, blocks of running requests pinned (``--concurrency``
requests in flight), freed blocks returned in reverse order to an LRU free queue whose head is
evicted first. Decode blocks are not modelled (answers are not reused across requests).

Reported: the share of prompt tokens served from the simulated cache; for 4 replicas (at Zipf
1.2 as ``replicas_4``, and at Zipf 0.8 as ``replicas_4_zipf_0.8``), each
routing policy of :class:`genesis.llm.ReplicaRouter` driven with real in-flight counts, and
``max_over_mean_load`` (requests served by the busiest replica over the mean) for
prefix_affinity.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genesis.knowledge._bm25 import BM25Index
from genesis.knowledge._chunking import chunk_text, iter_source_files
from genesis.knowledge._types import Chunk
from genesis.llm import BLOCK_SIZE, Policy, ReplicaRouter, ReplicaSpec, block_hashes
from genesis.rag._assembly import AssembledPrompt, PromptAssembler
from genesis.tokens import HFTokenizer, TokenIds
from genesis.tokens._segments import SegmentEncoder

PHRASINGS = [
    "{q}",
    "Quick question: {q}",
    "{q} Thanks!",
    "Could you explain this? {q}",
    "I'm stuck. {q}",
    "{q} I'm on the latest FastAPI.",
    "Hi! {q}",
    "Please help: {q}",
]


class BlockCache:
    """One replica's prefix cache: ``num_blocks`` KV blocks, vLLM's hit and eviction rules."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.refs: dict[bytes, int] = {}  # cached block hash -> running requests using it
        self.free: OrderedDict[bytes, None] = OrderedDict()  # ref 0, LRU first

    def admit(self, hashes: Sequence[bytes], num_tokens: int) -> tuple[int, list[bytes]]:
        """Cached tokens for a prompt, and the blocks it now pins (release them later)."""
        limit = (num_tokens - 1) // BLOCK_SIZE  # the last token is always recomputed
        hits = 0
        while hits < min(limit, len(hashes)) and hashes[hits] in self.refs:
            hits += 1
        pinned: list[bytes] = []
        for h in hashes:
            if h in self.refs:
                self._touch(h)
            elif not self._allocate(h):
                break  # no free block: the rest is computed but not cached
            pinned.append(h)
        return hits * BLOCK_SIZE, pinned

    def release(self, pinned: list[bytes]) -> None:
        for h in reversed(pinned):  # vLLM frees tail blocks first: they are evicted first
            self.refs[h] -= 1
            if self.refs[h] == 0:
                self.free[h] = None

    def _touch(self, h: bytes) -> None:
        if self.refs[h] == 0:
            del self.free[h]
        self.refs[h] += 1

    def _allocate(self, h: bytes) -> bool:
        if len(self.refs) >= self.num_blocks:
            if not self.free:
                return False
            evicted, _ = self.free.popitem(last=False)
            del self.refs[evicted]
        self.refs[h] = 1
        return True


@dataclass(slots=True)
class Prompt:
    ids: TokenIds
    hashes: list[bytes]


async def _corpus(shared: Path, tok: HFTokenizer) -> list[Chunk]:
    folder = shared / "corpora" / "docs" / "fastapi"
    chunks: list[Chunk] = []
    for rel, path in iter_source_files(folder):
        text = path.read_text("utf-8", "replace")
        chunks += chunk_text(
            text, source=rel, collection="fastapi", max_tokens=256, count_tokens=tok.count
        )
    return chunks


def _intents(shared: Path, chunks: list[Chunk]) -> list[str]:
    lines = (shared / "corpora/docs/fastapi/queries.jsonl").read_text("utf-8").splitlines()
    labelled = [json.loads(line)["query"] for line in lines if line.strip()]
    leaves = sorted({c.heading.split(" > ")[-1].strip() for c in chunks if c.heading.strip()})
    return labelled + [f"How does {leaf} work in FastAPI?" for leaf in leaves]


class Prompts:
    """Both layouts of each (intent, phrasing), assembled once and memoised."""

    def __init__(
        self, assembler: PromptAssembler, chunks: list[Chunk], seg_ids: dict[str, TokenIds]
    ) -> None:
        self._assembler = assembler
        self._by_id = {c.id: c for c in chunks}
        self._seg_ids = seg_ids
        self._bm25 = BM25Index.build([c.id for c in chunks], [c.text for c in chunks])
        self._memo: dict[tuple[str, str], Prompt] = {}

    async def get(self, question: str, layout: str) -> Prompt:
        key = (question, layout)
        if key not in self._memo:
            await self._fill(question)
        return self._memo[key]

    async def _fill(self, question: str) -> None:
        hits = [self._by_id[i] for i, _ in self._bm25.search(question, 5)]
        ids = [self._seg_ids[c.id] for c in hits]
        prompt = await self._assembler.assemble(question, hits, ids, budget_tokens=3584)
        conventional = _conventional(prompt, hits)
        for layout, arr in (("genesis", prompt.ids), ("conventional", conventional)):
            self._memo[(question, layout)] = Prompt(arr, block_hashes(arr))


def _conventional(prompt: AssembledPrompt, ranked: list[Chunk]) -> TokenIds:
    """System, question, then the included chunks by score: the same pieces, reordered."""
    piece = {s.name: prompt.ids[s.start : s.start + s.length] for s in prompt.segments}
    number = {inc.chunk.id: inc.number for inc in prompt.included}
    parts = [piece["system"], piece["query"]]
    if prompt.included:
        parts.append(piece["context"])
    for rank, chunk in enumerate((c for c in ranked if c.id in number), start=1):
        parts += [piece[f"marker:{rank}"], piece[f"chunk:{number[chunk.id]}"]]
    return np.concatenate(parts)


def _workload(intents: list[str], skew: float, n: int, phrasings: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    order = intents[:]
    rng.shuffle(order)  # popularity rank independent of the file order
    weights = [1.0 / (rank**skew) for rank in range(1, len(order) + 1)]
    picked = rng.choices(order, weights=weights, k=n)
    return [PHRASINGS[rng.randrange(phrasings)].format(q=q) for q in picked]


async def _replay(
    prompts: Prompts,
    questions: list[str],
    layout: str,
    *,
    replicas: int,
    blocks: int,
    concurrency: int,
    policy: Policy | None,
    prefix_blocks: int = 8,
    load_factor: float = 1.25,
) -> dict[str, float]:
    specs = [ReplicaSpec(f"http://replica-{i}:8000") for i in range(replicas)]
    router = ReplicaRouter(
        specs, policy=policy or "least_loaded", prefix_blocks=prefix_blocks, load_factor=load_factor
    )
    caches = [BlockCache(blocks) for _ in range(replicas)]
    running: deque[tuple[int, list[bytes]]] = deque()
    hit_tokens = total_tokens = 0
    for question in questions:
        if len(running) >= concurrency:  # the oldest request finishes
            index, pinned = running.popleft()
            caches[index].release(pinned)
            router.release(router.replicas[index])
        prompt = await prompts.get(question, layout)
        replica = router.order(router.affinity_key(prompt.ids))[0]  # what the backend does
        router.acquire(replica)
        hit, pinned = caches[replica.index].admit(prompt.hashes, len(prompt.ids))
        running.append((replica.index, pinned))
        hit_tokens += hit
        total_tokens += len(prompt.ids)
    served = [r.served for r in router.replicas]
    return {
        "cached_share": round(hit_tokens / total_tokens, 4),
        "max_over_mean_load": round(max(served) / (sum(served) / len(served)), 4),
    }


_POLICIES: tuple[Policy, ...] = ("prefix_affinity", "round_robin", "least_loaded")


async def _fleet(
    prompts: Prompts, questions: list[str], blocks: int, args: argparse.Namespace
) -> dict[str, Any]:
    """4 replicas under each policy, and one cache as large as all four (no policy can beat
    sharing one cache, so this bounds what routing can gain)."""
    fleet: dict[str, Any] = {}
    loads: dict[str, float] = {}
    options: dict[str, Any] = {
        "concurrency": args.concurrency,
        "prefix_blocks": args.prefix_blocks,
        "load_factor": args.load_factor,
    }
    for policy in _POLICIES:
        r = await _replay(
            prompts, questions, "genesis", replicas=4, blocks=blocks, policy=policy, **options
        )
        fleet[policy] = r["cached_share"]
        loads[policy] = r["max_over_mean_load"]
    fleet["max_over_mean_load"] = loads["prefix_affinity"]
    fleet["max_over_mean_load_by_policy"] = loads
    fleet["affinity_over_round_robin"] = round(
        fleet["prefix_affinity"] / max(fleet["round_robin"], 1e-9), 3
    )
    ideal = await _replay(
        prompts, questions, "genesis", replicas=1, blocks=4 * blocks, policy=None, **options
    )
    fleet["one_cache_4x_upper_bound"] = ideal["cached_share"]
    return fleet


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    tok = HFTokenizer.from_file(args.shared / "tokenizers" / "mistral-7b-v0.1")
    encoder = SegmentEncoder(tok)
    assembler = PromptAssembler(encoder)
    await assembler.warm_up()
    chunks = await _corpus(args.shared, tok)
    texts = [assembler.chunk_segment_text(c) for c in chunks]
    seg_ids: dict[str, TokenIds] = {}
    for i in range(0, len(chunks), 256):
        encoded = await encoder.encode_batch(texts[i : i + 256])
        seg_ids.update(zip((c.id for c in chunks[i : i + 256]), encoded, strict=True))
    prompts = Prompts(assembler, chunks, seg_ids)
    intents = _intents(args.shared, chunks)
    common = {"blocks": args.blocks, "concurrency": args.concurrency}
    out: dict[str, Any] = {}
    for skew in (1.2, 0.8):
        questions = _workload(intents, skew, args.requests, args.phrasings, args.seed)
        result = {}
        for layout in ("genesis", "conventional"):
            r = await _replay(prompts, questions, layout, replicas=1, policy=None, **common)
            result[f"{layout}_layout"] = r["cached_share"]
        result["genesis_over_conventional"] = round(
            result["genesis_layout"] / max(result["conventional_layout"], 1e-9), 3
        )
        out[f"zipf_{skew}"] = result
        print(f"zipf {skew}: {result}", flush=True)
    questions_08 = _workload(intents, 0.8, args.requests, args.phrasings, args.seed)
    out["replicas_4_zipf_0.8"] = await _fleet(prompts, questions_08, args.blocks, args)
    print(f"4 replicas, zipf 0.8: {out['replicas_4_zipf_0.8']}", flush=True)
    questions = _workload(intents, 1.2, args.requests, args.phrasings, args.seed)
    out["replicas_4"] = await _fleet(prompts, questions, args.blocks, args)
    print(f"4 replicas, zipf 1.2: {out['replicas_4']}", flush=True)
    sweep = {}
    for blocks in args.sweep:
        r = await _fleet(prompts, questions, blocks, args)
        sweep[str(blocks)] = {k: r[k] for k in (*_POLICIES, "one_cache_4x_upper_bound")}
        print(f"  blocks per replica {blocks}: {sweep[str(blocks)]}", flush=True)
    out["replicas_4_by_blocks_per_replica"] = sweep
    out["settings"] = {
        "requests": args.requests,
        "blocks_per_replica": args.blocks,
        "block_size": BLOCK_SIZE,
        "concurrency": args.concurrency,
        "phrasings": args.phrasings,
        "intents": len(intents),
        "chunks": len(chunks),
        "tokenizer": "mistral-7b-v0.1",
        "top_k": 5,
        "router_prefix_blocks": args.prefix_blocks,
        "router_load_factor": args.load_factor,
        "seed": args.seed,
        "python": platform.python_version(),
    }
    return out


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--shared", type=Path, default=here.parent / "shared")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--blocks", type=int, default=4096, help="KV blocks per replica")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--phrasings", type=int, default=8, choices=range(1, 9))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--prefix-blocks", type=int, default=8)
    parser.add_argument("--load-factor", type=float, default=1.25)
    parser.add_argument(
        "--sweep", type=int, nargs="*", default=[512, 1024, 16384], help="more cache sizes"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    out = asyncio.run(_run(args))
    out["settings"]["seconds"] = round(time.perf_counter() - start, 1)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
