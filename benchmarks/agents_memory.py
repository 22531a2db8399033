"""Resident memory of one process holding all six agents and the embedding model.

    python benchmarks/agents_memory.py --json out.json [--home DIR]

Builds Genesis on the embedded defaults, ingests the demo knowledge base (into a temporary
home unless --home is given), asks every agent one question through the token-cached
pipeline, then reads the process's resident set size. Writes
``{"rss_mb", "peak_rss_mb", "agents", "target_mb", "under_target"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
from pathlib import Path
from typing import Any

from genesis.app import Genesis

TARGET_MB = 600.0
QUESTIONS = {
    "support": "How do I rotate an API key?",
    "documentation": "How does cursor pagination work?",
    "business_generation": "Draft a plan for a mobile bike repair service",
    "qa": "Which fixtures should tests for invoices use?",
    "code_review": "What are common bug patterns in Python code?",
    "se_darwin": "How can I make a slow loop faster?",
}


def rss_mb() -> float:
    """Current resident set size (VmRSS) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status")


async def measure(home: Path) -> dict[str, Any]:
    genesis = Genesis.from_config("dev", environ={}, overrides={"home": str(home)})
    await genesis.warm_up()
    try:
        await genesis.ensure_demo()
        after_load = rss_mb()
        for name, question in QUESTIONS.items():
            await genesis.agent(name).answer(question)
        return {
            "agents": len(genesis.agents),
            "rss_after_load_mb": round(after_load, 1),
            "rss_mb": round(rss_mb(), 1),
        }
    finally:
        await genesis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(measure(args.home or Path(tmp)))
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["target_mb"] = TARGET_MB
    result["under_target"] = result["rss_mb"] < TARGET_MB
    args.json.write_text(json.dumps(result, indent=2))
    print(
        f"{result['agents']} agents + embedding model: RSS {result['rss_mb']} MB after answering "
        f"({result['rss_after_load_mb']} MB after loading), peak {result['peak_rss_mb']} MB; "
        f"target < {TARGET_MB:.0f} MB: {'met' if result['under_target'] else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
