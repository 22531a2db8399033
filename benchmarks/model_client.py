"""The model call's cost to the event loop: httpx against aiohttp, side by side in one run.

    python benchmarks/model_client.py --json out.json [--calls 2000] [--rounds 2]

Every answer's completions call runs on the server's event loop, so the CPU the HTTP client
spends per call is loop time. This script starts Genesis's fake completions server in its
own process (it answers at once), then sends the same ``/v1/completions`` body (600 token
IDs) through each client as Genesis's backends send it: ``genesis._http.post_json`` on
``new_client()`` (httpx) and ``post_json_aio`` on ``new_session()`` (aiohttp), with 1 and 16
calls in flight, in alternating rounds so that machine drift hits both. It reports this
process's CPU time per call (``time.process_time``: the client's own work, not the
server's) and the ratio httpx / aiohttp, medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from genesis._http import new_client, new_session, post_json, post_json_aio

_SERVER = """
import sys
from genesis.knowledge import MiniLMEmbedder
from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.tokens import HFTokenizer

tok = HFTokenizer.from_file(MiniLMEmbedder().tokenizer_path)
with FakeOpenAIServer(tok, ["m"]) as srv:
    print(srv.base_url, flush=True)
    sys.stdin.read()  # serve until the benchmark closes our stdin
"""

PAYLOAD: dict[str, Any] = {
    "model": "m",
    "prompt": list(range(1000, 1600)),
    "max_tokens": 64,
    "temperature": 0.0,
}
Call = Callable[[], Awaitable[dict[str, Any]]]


async def _cpu_per_call_ms(call: Call, calls: int, in_flight: int) -> float:
    for _ in range(50):  # connections open, code paths warm
        await call()
    gate = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with gate:
            body = await call()
            if not body.get("choices"):
                raise SystemExit(f"the fake server answered without choices: {body}")

    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(calls)))
    return (time.process_time() - started) / calls * 1000.0


async def _client_cost(kind: str, url: str, calls: int, in_flight: int) -> float:
    """CPU per call through Genesis's own call for ``kind``: httpx or aiohttp."""
    call: Call
    if kind == "httpx":
        client = new_client()
        call = functools.partial(
            post_json, client, url, PAYLOAD, timeout_s=10, headers={}, what=kind
        )
        close = client.aclose
    else:
        session = new_session()
        call = functools.partial(
            post_json_aio, session, url, PAYLOAD, timeout_s=10, headers={}, what=kind
        )
        close = session.close
    try:
        return await _cpu_per_call_ms(call, calls, in_flight)
    finally:
        await close()


def run(calls: int, rounds: int) -> dict[str, Any]:
    import uvloop  # the server's loop (server.loop: auto)

    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip() + "/v1/completions"
        samples: dict[str, dict[str, list[float]]] = {}
        for _ in range(rounds):
            for in_flight in (1, 16):
                for name in ("httpx", "aiohttp"):
                    ms = uvloop.run(_client_cost(name, url, calls, in_flight))
                    samples.setdefault(f"c{in_flight}", {}).setdefault(name, []).append(ms)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    out: dict[str, Any] = {}
    for key, by_client in samples.items():
        med = {name: round(statistics.median(v), 4) for name, v in by_client.items()}
        out[key] = {
            "cpu_ms_per_call": med,
            "runs": {k: [round(x, 4) for x in v] for k, v in by_client.items()},
            "httpx_over_aiohttp": round(med["httpx"] / med["aiohttp"], 2),
        }
    out["settings"] = {
        "calls": calls,
        "rounds": rounds,
        "prompt_ids": 600,
        "python": platform.python_version(),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    out = run(args.calls, args.rounds)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
