"""Streaming and session memory through `genesis serve`, as a client sees them.

    OPENBLAS_NUM_THREADS=1 python benchmarks/streaming.py [--json out.json] [--requests 20]
        [--delay-ms 20] [--home DIR] [--redis-url redis://127.0.0.1:6379/0]

Starts a fake vLLM (``genesis.testing.fake_openai``, in this process) that streams its reply
a word at a time with ``--delay-ms`` between words (a model decoding), and ``genesis serve``
with the completions backend pointed at it. Then, one request at a time, measured with the
``openai`` SDK:

- ``stream``: time to the first content chunk and to the end of the stream (``stream=True``);
- ``whole``: the same request without streaming (time to the whole answer);
- ``session`` / ``no_session``: ``POST /v1/ask`` with and without a ``session_id``, the
  fake answering at once (one session read before, one append after each answer; in Redis
  with ``--redis-url``, else in-process). Sessions cycle over 4 ids, so most requests carry
  history turns into the prompt too.

Ratios are taken within the run: ``first_chunk_over_whole`` (how much sooner a streaming
client sees text) and ``session_over_no_session`` (what session memory costs a request).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai

from genesis.config import load_settings
from genesis.knowledge import MiniLMEmbedder
from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.testing.server_process import api_key_for, config_with_keys, serve
from genesis.tokens import HFTokenizer

QUESTION = "How do I rotate an API key?"
REPLY = " ".join(["Open Settings, then API keys, choose the key and click Rotate."] * 3)


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000.0, 3)


def _stream_once(client: openai.OpenAI) -> tuple[float, float, int]:
    begin = time.perf_counter()
    first, pieces = None, 0
    stream = client.chat.completions.create(
        model="support", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            first = first or time.perf_counter() - begin
    return first or float("nan"), time.perf_counter() - begin, pieces


def _whole_once(client: openai.OpenAI) -> float:
    begin = time.perf_counter()
    client.chat.completions.create(
        model="support", messages=[{"role": "user", "content": QUESTION}]
    )
    return time.perf_counter() - begin


def _ask_once(http: httpx.Client, session: str | None) -> float:
    body: dict[str, Any] = {"question": QUESTION, "agent": "support"}
    if session:
        body["session_id"] = session
    begin = time.perf_counter()
    response = http.post("/v1/ask", json=body)
    response.raise_for_status()
    return time.perf_counter() - begin


def run(
    requests: int, delay_ms: float, home: Path, work: Path, redis_url: str | None
) -> dict[str, Any]:
    settings = load_settings("dev", environ={})
    models = sorted(
        {m for p in settings.agents.values() for m in (p.models.finetuned, p.models.baseline) if m}
    )
    tok = HFTokenizer.from_file(MiniLMEmbedder().tokenizer_path)
    config = config_with_keys(work / "config", {"bench": ["query"]})
    key = api_key_for("bench")
    with FakeOpenAIServer(
        tok, models, replies=dict.fromkeys(models, REPLY), stream_delay_s=delay_ms / 1000
    ) as llm:
        sets = ["llm.backend=completions", f"llm.base_url={llm.base_url}"]
        prefix = f"gbench{uuid.uuid4().hex[:6]}"
        if redis_url:
            sets += [f"redis.url={redis_url}", f"sessions.prefix={prefix}"]
        with serve(home, *sets, global_args=["--config-dir", str(config)]) as server:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
            http = httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            )
            _stream_once(client), _whole_once(client), _ask_once(http, None)  # warm
            firsts, ends, wholes, pieces = [], [], [], []
            for _ in range(requests):  # interleaved, so drift hits both sides alike
                first, end, count = _stream_once(client)
                firsts.append(first), ends.append(end), pieces.append(count)
                wholes.append(_whole_once(client))
            llm.stream_delay_s = 0.0  # session cost is measured on answers that take no time
            with_session, without = [], []
            for n in range(requests):
                with_session.append(_ask_once(http, f"bench-{n % 4}"))
                without.append(_ask_once(http, None))
            http.close()
    if redis_url:  # the sessions this run wrote
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    return {
        "requests": requests,
        "delay_ms_per_word": delay_ms,
        "stream_first_chunk_ms": _median_ms(firsts),
        "stream_end_ms": _median_ms(ends),
        "stream_content_chunks": statistics.median(pieces),
        "whole_ms": _median_ms(wholes),
        "first_chunk_over_whole": round(statistics.median(firsts) / statistics.median(wholes), 3),
        "ask_session_ms": _median_ms(with_session),
        "ask_no_session_ms": _median_ms(without),
        "session_over_no_session": round(
            statistics.median(with_session) / statistics.median(without), 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--home", type=Path, help="a GENESIS_HOME to reuse (demo ingested)")
    parser.add_argument("--redis-url", help="sessions (and the token cache's L2) in this Redis")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="genesis-stream-bench-") as tmp:
        work = Path(tmp)
        home = args.home or work / f"home-{uuid.uuid4().hex[:6]}"
        result = run(args.requests, args.delay_ms, home, work, args.redis_url)
    result["session_store"] = "redis" if args.redis_url else "in-process"
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
