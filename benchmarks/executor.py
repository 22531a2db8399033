"""Threads or processes for a request's CPU work: the measurement behind `genesis._executor`.

    python benchmarks/executor.py --json out.json [--steps 48] [--workers N]

One "step" is the CPU work of an uncached request: a MiniLM query embedding (NumPy forward
pass) plus a `tokenizers` batch encode of five ~500-token chunks. The same steps run, in one
run, (a) one after another, (b) in a thread pool and (c) in a process pool of ``--workers``
(default: the cores this process may use), each worker of (c) loading its own model first.
Then the event loop's lag is sampled (a 1 ms ticker) while the steps run inline on the loop
and while they run in the thread pool. Writes::

    {"workers", "steps", "serial_steps_per_s", "threads_steps_per_s",
     "processes_steps_per_s", "threads_vs_serial", "threads_vs_processes",
     "process_start_s", "loop_lag_ms": {"inline_max", "threads_max", "threads_p99"}}

BLAS is pinned to one thread per worker (the default lets OpenBLAS start one per core in
every call, oversubscribing the cores as soon as two steps run together).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402  (BLAS threads must be pinned before NumPy loads)
import asyncio  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from genesis._executor import default_workers  # noqa: E402
from genesis.knowledge import MiniLMEmbedder  # noqa: E402
from genesis.tokens import HFTokenizer  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "src" / "genesis" / "demo_kb"
_state: dict[str, Any] = {}


def _load() -> None:
    """Load the model and tokenizer of this process (once per process-pool worker)."""
    embedder = MiniLMEmbedder()
    embedder.warm_up()
    _state["embedder"] = embedder
    _state["tokenizer"] = HFTokenizer.from_file(embedder.tokenizer_path)
    texts = [p.read_text(encoding="utf-8") for p in sorted(DEMO.rglob("*.md"))]
    _state["chunks"] = [" ".join(t.split()[:380]) for t in texts[:5]]


def step(n: int) -> int:
    """One uncached request's CPU work; returns a small number so pickling stays fair."""
    question = f"question {n}: how do I rotate an API key and keep webhooks working?"
    vector = _state["embedder"].embed_documents([question])[0]
    ids = _state["tokenizer"].encode_batch_sync(_state["chunks"])
    return int(vector.argmax()) + sum(len(i) for i in ids)


def _rate(run: Callable[[], object], steps: int) -> float:
    started = time.perf_counter()
    run()
    return steps / (time.perf_counter() - started)


def _pooled(pool: Executor, steps: int, workers: int) -> float:
    list(pool.map(step, range(workers)))  # start every worker before timing
    return _rate(lambda: list(pool.map(step, range(steps))), steps)


async def _lag(steps: int, pool: ThreadPoolExecutor | None) -> list[float]:
    """Event-loop lag samples (ms) of a 1 ms ticker while ``steps`` steps run."""
    samples: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            samples.append((time.perf_counter() - before) * 1000 - 1.0)

    async def work() -> None:
        loop = asyncio.get_running_loop()
        if pool is None:
            for n in range(steps):
                step(n)
                await asyncio.sleep(0)
        else:
            await asyncio.gather(*(loop.run_in_executor(pool, step, n) for n in range(steps)))
        done.set()

    await asyncio.gather(ticker(), work())
    return samples


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else max(values)


def measure(steps: int, workers: int) -> dict[str, Any]:
    _load()
    serial = _rate(lambda: [step(n) for n in range(steps)], steps)
    with ThreadPoolExecutor(workers) as threads:
        threaded = _pooled(threads, steps, workers)
        inline_lag = asyncio.run(_lag(steps // 2, None))
        thread_lag = asyncio.run(_lag(steps // 2, threads))
    started = time.perf_counter()
    with ProcessPoolExecutor(workers, initializer=_load) as processes:
        list(processes.map(step, range(workers)))  # every worker has loaded its model
        start_s = time.perf_counter() - started
        processed = _rate(lambda: list(processes.map(step, range(steps))), steps)
    return {
        "workers": workers,
        "steps": steps,
        "serial_steps_per_s": round(serial, 2),
        "threads_steps_per_s": round(threaded, 2),
        "processes_steps_per_s": round(processed, 2),
        "threads_vs_serial": round(threaded / serial, 3),
        "threads_vs_processes": round(threaded / processed, 3),
        "process_start_s": round(start_s, 2),
        "loop_lag_ms": {
            "inline_max": round(max(inline_lag), 2),
            "threads_max": round(max(thread_lag), 2),
            "threads_p99": round(_p99(thread_lag), 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--workers", type=int, default=default_workers())
    args = parser.parse_args()
    result = measure(args.steps, args.workers)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
