"""`genesis serve` under load, as a user would run it: real HTTP on loopback, its own home.

    python benchmarks/service_load.py [--json out.json] [--workers 2] [--seconds 15]
        [--api-key KEY] [--server-set key=value ...] [--port 18200] [--redis-port 18241]
        [--harness-nice 10]

Starts a Redis of its own (``redis-server`` on ``--redis-port``), a fake OpenAI-compatible
completions server that answers at once (``genesis.testing.fake_openai``, in a subprocess),
and ``python -m genesis serve --workers N`` with a fresh ``GENESIS_HOME``. Then, with
``httpx.AsyncClient`` clients posting ``/v1/ask`` (agent ``support``), each phase bounded in
time (``--seconds``):

- ``repeated.c1`` / ``repeated.c32``: one question, over and over, by 1 and 32 clients;
- ``distinct.c1`` / ``distinct.c32``: questions no earlier phase asked (templates x the demo
  knowledge base's headings; every question is asked once in the whole run, so each one's
  embedding is computed, never read from a cache); ``distinct.c32`` goes on past
  ``--seconds`` until ``--distinct-min`` (500) questions were asked, capped by
  ``--max-seconds``;
- ``routed.c1`` / ``routed.c32``: fresh distinct questions with no agent named, as most users
  send them: the router reads each one, and every collection's evidence is weighed for the
  answer (`genesis.rag.TokenCachedRAG.answer`'s alternates), so a request does several
  searches; ``routed.loop_lag_p99_ms`` is its c32 phase's loop lag, apart from the targets';
- ``redis_tier``: a second server start with the L1 disabled (``cache.l1_max_bytes=0``), 32
  clients, fresh distinct questions: which share of L1 misses Redis serves.

Server-side figures come from ``/metrics`` (summed over the workers): ``loop_lag_p99_ms`` is
the p99 of the event-loop lag samples taken during the two c32 phases (from the difference
of the ``genesis_event_loop_lag_seconds`` histogram before and after each phase, read at bucket
resolution: the bound of the bucket that holds the 99th percentile); ``breaker_opened``
counts token-cache breaker openings over the whole run (Redis stays healthy);
``redis_hit_share`` is L2 hits / (L2 hits + misses) of chunk lookups in the last phase.
``errors`` counts responses other than 200 and failed requests in all phases.

The server runs with ``auth.rate_limits.enabled=false``: every client here comes from one
address, whose rate limit (100 requests/s by default) would otherwise answer 429.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DEMO_KB = REPO / "src" / "genesis" / "demo_kb"
AGENT = "support"
REPEATED = "How do I rotate an API key?"
TARGETS = {
    "distinct_c32_over_c1_rps": 3.0,
    "loop_lag_p99_ms": 5.0,
    "breaker_opened": 0,
    "redis_hit_share": 0.95,
    "errors": 0,
}
FAKE_LLM = """
import sys
from genesis.config import load_settings
from genesis.knowledge import MiniLMEmbedder
from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.tokens import HFTokenizer

settings = load_settings("dev", environ={})
models = {m for p in settings.agents.values() for m in (p.models.finetuned, p.models.baseline)}
models.add(settings.llm.default_model)
tok = HFTokenizer.from_file(MiniLMEmbedder().tokenizer_path)
with FakeOpenAIServer(tok, sorted(m for m in models if m)) as srv:
    print(srv.base_url, flush=True)
    sys.stdin.read()  # serve until the benchmark closes our stdin
"""


# -- questions -------------------------------------------------------------------------------

TEMPLATES = (
    "How do I {t}?",
    "What should I know about {t}?",
    "Can you explain {t} step by step?",
    "Where do I find the settings for {t}?",
    "Is there a limit on {t}?",
    "Why would {t} fail for my account?",
    "Who on my team can manage {t}?",
    "What changed recently about {t}?",
)
CONTEXTS = (
    "",
    " for a small team",
    " on the enterprise plan",
    " in the EU region",
    " through the API",
    " after a migration",
    " for a new workspace",
    " on a trial account",
    " with SSO enabled",
    " this month",
)


def topics() -> list[str]:
    """The demo knowledge base's headings, lower-cased, without question words."""
    found: set[str] = set()
    for path in sorted(DEMO_KB.rglob("*.md")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                words = re.sub(r"[?#]", "", line).strip().lower()
                words = re.sub(
                    r"^(how (do|does|can|long) (i|you|the)?|what|why|can|where)\s+", "", words
                )
                if len(words) > 6:
                    found.add(words)
    return sorted(found)


def distinct_questions() -> Iterator[str]:
    """Every template x topic x context once, in an order that varies all three."""
    combos = itertools.product(CONTEXTS, topics(), TEMPLATES)
    for context, topic, template in combos:
        yield template.format(t=topic + context)


# -- processes -------------------------------------------------------------------------------


def free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


# -- where the cores went ---------------------------------------------------------------------

# The processes that share the machine in a run (filled as they start): their CPU time per
# phase tells the server's share from the load generator's, the fake model's, Redis' and
# everything else on the machine (other jobs on a shared box).
PIDS: dict[str, int] = {}
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # the fields after "pid (comm)"


def cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of: the server (its process group), the harness (this process),
    the fake model, Redis, and the whole machine (``/proc/stat``). Empty off Linux."""
    if not Path("/proc/stat").exists():
        return {}
    out = {"server": 0.0, "harness": 0.0, "fake_llm": 0.0, "redis": 0.0}
    group = PIDS.get("server")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is None:
            continue
        used = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
        pid = int(entry.name)
        if group is not None and int(fields[2]) == group:  # pgrp
            out["server"] += used
            out[f"worker:{pid}"] = used  # the supervisor too (it uses next to nothing)
        elif pid == os.getpid():
            out["harness"] += used
        elif pid == PIDS.get("fake_llm"):
            out["fake_llm"] += used
        elif pid == PIDS.get("redis"):
            out["redis"] += used
    busy = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in busy[:8])
    out["machine"] = (user + nice + system + irq + softirq + steal) / _TICK
    return out


def cores_used(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, Any]:
    """Cores each party used over a phase, and ``rest_of_machine``: what other processes
    (not this benchmark's) used meanwhile."""
    if not before or seconds <= 0:
        return {}
    # A process that ended during the phase took its CPU time with it: left out (never < 0).
    used = {k: max(0.0, after[k] - before[k]) / seconds for k in before if k in after}
    ours = used["server"] + used["harness"] + used["fake_llm"] + used["redis"]
    out: dict[str, Any] = {k: round(used[k], 2) for k in ("server", "harness", "fake_llm", "redis")}
    out["rest_of_machine"] = round(max(0.0, used["machine"] - ours), 2)
    # Each server process's cores, busiest first: are the workers balanced?
    per = [(after[k] - before.get(k, 0.0)) / seconds for k in after if k.startswith("worker:")]
    out["server_processes"] = [round(c, 2) for c in sorted(per, reverse=True)]
    return out


@contextlib.contextmanager
def redis_server(port: int) -> Iterator[str]:
    if not free(port):
        raise SystemExit(f"port {port} is taken: pass another --redis-port")
    folder = tempfile.mkdtemp(prefix="bench-redis-")
    args = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        folder,
        "--maxmemory",
        "256mb",
        "--maxmemory-policy",
        "allkeys-lru",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    PIDS["redis"] = proc.pid
    try:
        deadline = time.monotonic() + 10
        while free(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def fake_llm() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE_LLM], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    PIDS["fake_llm"] = proc.pid
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise SystemExit("the fake completions server did not start")
        yield url
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def harness_nice(nice: int) -> None:
    """Run this process (the load generator; Redis and the fake model server are started
    from it and inherit the value) at ``nice``: on a 2-core machine they share the cores with
    the server under test, which real clients do not. The server is started back at 0."""
    if nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)


def _server_priority() -> None:
    if os.getpriority(os.PRIO_PROCESS, 0) != 0:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        except PermissionError:
            os.write(2, b"--harness-nice needs root (CAP_SYS_NICE) to start the server at 0\n")
            os._exit(1)


@contextlib.contextmanager
def genesis_serve(
    home: Path, port: int, workers: int, sets: list[str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    if not free(port):
        raise SystemExit(f"port {port} is taken: pass another --port")
    args = [sys.executable, "-m", "genesis", "--home", str(home)]
    for item in sets:
        args += ["--set", item]
    args += ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    with log.open("ab") as out:
        # A session of its own: the workers are stopped with their parent, as by Ctrl-C.
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_server_priority,
        )
    PIDS["server"] = proc.pid  # its own session: the process group of it and its workers
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def wait_ready(
    client: httpx.AsyncClient, proc: subprocess.Popen[bytes], limit_s: float
) -> float:
    began = time.monotonic()
    while time.monotonic() - began < limit_s:
        if proc.poll() is not None:
            raise SystemExit(f"genesis serve exited with {proc.returncode} (see its log)")
        with contextlib.suppress(httpx.HTTPError):
            response = await client.get("/health/ready")
            if response.status_code == 200 and response.json().get("status") in ("ok", "degraded"):
                return time.monotonic() - began
        await asyncio.sleep(0.5)
    raise SystemExit(f"genesis serve was not ready within {limit_s:.0f} s")


# -- load ------------------------------------------------------------------------------------


class Phase:
    """Latencies and errors of one phase."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        # Server-Timing of each answered request: where the server says the time went.
        self.stages_ms: dict[str, list[float]] = {}
        self.errors = 0
        self.first_error = ""
        self.elapsed_s = 0.0
        self.cores: dict[str, Any] = {}  # cores each party used over the phase

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        if not lat:
            return {
                "rps": 0.0,
                "p50_ms": None,
                "p99_ms": None,
                "requests": 0,
                "errors": self.errors,
            }
        p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
        return {
            "rps": round(len(lat) / self.elapsed_s, 2),
            "p50_ms": round(statistics.median(lat), 2),
            "p99_ms": round(p99, 2),
            "requests": len(lat),
            "errors": self.errors,
            "server_p50_ms": {
                stage: round(statistics.median(v), 3) for stage, v in self.stages_ms.items()
            },
            "cores": self.cores,
        }

    def record_timing(self, header: str) -> None:
        for item in header.split(","):
            name, _, dur = item.strip().partition(";dur=")
            with contextlib.suppress(ValueError):
                self.stages_ms.setdefault(name, []).append(float(dur))


async def run_phase(
    client: httpx.AsyncClient,
    clients: int,
    seconds: float,
    questions: Iterator[str],
    *,
    min_requests: int = 0,
    max_seconds: float | None = None,
    agent: str | None = AGENT,
) -> Phase:
    """``clients`` loops for ``seconds``, or on until ``min_requests`` have started (but
    never past ``max_seconds``); ``agent`` None leaves the choice to the router."""
    phase = Phase()
    cpu_before = cpu_seconds()
    began = time.perf_counter()
    cap = began + (max_seconds if max_seconds is not None else seconds)
    started = 0

    def more() -> bool:
        now = time.perf_counter()
        return now < cap and (now < began + seconds or started < min_requests)

    async def one_client() -> None:
        nonlocal started
        while more():
            started += 1
            question = next(questions, None)
            if question is None:
                return
            began = time.perf_counter()
            try:
                body = {"question": question, **({"agent": agent} if agent else {})}
                response = await client.post("/v1/ask", json=body)
                ok = response.status_code == 200
                detail = f"{response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            if ok:
                phase.latencies_ms.append((time.perf_counter() - began) * 1000.0)
                phase.record_timing(response.headers.get("server-timing", ""))
            else:
                phase.errors += 1
                phase.first_error = phase.first_error or detail

    await asyncio.gather(*(one_client() for _ in range(clients)))
    phase.elapsed_s = time.perf_counter() - began
    phase.cores = cores_used(cpu_before, cpu_seconds(), phase.elapsed_s)
    return phase


# -- metrics ---------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    """``{"name{labels}": value}`` summed over duplicate series, from /metrics."""
    text = (await client.get("/metrics")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            key = match.group(1) + (match.group(2) or "")
            out[key] = out.get(key, 0.0) + float(match.group(3))
    return out


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def lag_buckets(delta: dict[str, float]) -> list[tuple[float, float]]:
    """Cumulative (upper bound ms, count) of the loop-lag histogram, sorted by bound."""
    out = []
    for key, count in delta.items():
        match = re.fullmatch(r'genesis_event_loop_lag_seconds_bucket\{le="([^"]+)"\}', key)
        if match:
            out.append((float(match.group(1)) * 1000.0, count))
    return sorted(out)


def share_over(buckets: list[tuple[float, float]]) -> dict[str, float]:
    """{bound ms: share of samples later than it} from cumulative buckets."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return {}
    return {f"{bound:g}": round(1.0 - count / total, 4) for bound, count in buckets[:-1]}


def p99_from_buckets(buckets: list[tuple[float, float]]) -> float | None:
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    for bound, count in buckets:
        if count >= 0.99 * total:
            return bound
    return buckets[-1][0]


def counter(delta: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s series that carry every one of ``labels`` (in any order: the
    exposition sorts them)."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        v
        for k, v in delta.items()
        if k.startswith(name + "{") and all(w in k[len(name) + 1 : -1].split(",") for w in want)
    )


# -- the run ---------------------------------------------------------------------------------


async def measure(
    args: argparse.Namespace, llm_url: str, redis_url: str, work: Path
) -> dict[str, Any]:
    home = work / "home"
    log = work / "serve.log"
    sets = [
        "llm.backend=completions",
        f"llm.base_url={llm_url}",
        f"redis.url={redis_url}",
        # One load generator is one client address: the per-client rate limit (100/s)
        # would measure the limiter (429s), not the service. --server-set can turn it back on.
        "auth.rate_limits.enabled=false",
        *args.server_set,
    ]
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    questions = distinct_questions()
    phases: dict[str, dict[str, Any]] = {"repeated": {}, "distinct": {}}
    lag_delta: dict[str, float] = {}
    lag_by_phase: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    # Idle connections expire on the client's side first: uvicorn closes a keep-alive
    # connection idle for 5 s, httpx's default expiry is also 5 s, and a request sent on a
    # connection the server is closing that instant fails with ReadError (seen between phases).
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=2.0)
    base = f"http://127.0.0.1:{args.port}"
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=60, limits=limits
    ) as client:
        with genesis_serve(home, args.port, args.workers, sets, log) as proc:
            ready_s = await wait_ready(client, proc, args.start_timeout)
            print(f"ready after {ready_s:.1f} s", file=sys.stderr)
            start = await scrape(client)
            # One request per worker would not reach every worker; a few seconds of the
            # repeated question warm every worker's connections before anything is measured.
            await run_phase(client, 4, 3.0, itertools.repeat(REPEATED))
            for kind in ("repeated", "distinct"):
                for clients in (1, 32):
                    source = itertools.repeat(REPEATED) if kind == "repeated" else questions
                    # (b) needs at least --distinct-min questions no phase embedded before.
                    least = args.distinct_min if (kind, clients) == ("distinct", 32) else 0
                    before = await scrape(client)
                    phase = await run_phase(
                        client,
                        clients,
                        args.seconds,
                        source,
                        min_requests=least,
                        max_seconds=args.max_seconds,
                    )
                    after = await scrape(client)
                    phases[kind][f"c{clients}"] = phase.summary()
                    if phase.first_error:
                        errors[f"{kind}.c{clients}"] = phase.first_error
                    if clients == 32:
                        delta = diff(after, before)
                        lag_by_phase[kind] = share_over(lag_buckets(delta))
                        for k, v in delta.items():
                            lag_delta[k] = lag_delta.get(k, 0.0) + v
                    print(kind, clients, phases[kind][f"c{clients}"], file=sys.stderr)
            # The same distinct questions with no agent named, as most users send them: each
            # is routed, and every other collection's evidence is weighed for the answer.
            routed: dict[str, Any] = {}
            for clients in (1, 32):
                before = await scrape(client)
                phase = await run_phase(client, clients, args.seconds, questions, agent=None)
                delta = diff(await scrape(client), before)
                routed[f"c{clients}"] = phase.summary()
                if phase.first_error:
                    errors[f"routed.c{clients}"] = phase.first_error
                print("routed", clients, routed[f"c{clients}"], file=sys.stderr)
            lag_by_phase["routed"] = share_over(lag_buckets(delta))
            routed["loop_lag_p99_ms"] = p99_from_buckets(lag_buckets(delta))
            phases["routed"] = routed
            first_run = diff(await scrape(client), start)
        sets.append("cache.l1_max_bytes=0")
        with genesis_serve(home, args.port, args.workers, sets, log) as proc:
            await wait_ready(client, proc, args.start_timeout)
            start = await scrape(client)
            tier = await run_phase(client, 32, args.seconds, questions)
            second_run = diff(await scrape(client), start)
            if tier.first_error:
                errors["redis_tier.c32"] = tier.first_error
    lookups = "genesis_token_cache_lookups_total"
    l2 = counter(second_run, lookups, tier="l2", outcome="hit")
    miss = counter(second_run, lookups, tier="l2", outcome="miss")
    opened = sum(
        counter(run, "genesis_breaker_opened_total", circuit="token-cache-l2")
        for run in (first_run, second_run)
    )
    stalled = {
        cause: counter(lag_delta, "genesis_event_loop_stalled_seconds_total", cause=cause)
        for cause in ("running", "runqueue", "other")
    }
    lag = lag_buckets(lag_delta)
    stalled_s = sum(stalled.values())
    total_errors = tier.errors + sum(
        p["errors"] for kind in phases.values() for p in kind.values() if isinstance(p, dict)
    )
    return {
        **phases,
        "redis_tier": {"c32": tier.summary(), "l2_hits": l2, "misses": miss},
        "loop_lag_p99_ms": p99_from_buckets(lag),
        "loop_lag_samples_c32": max((c for _, c in lag), default=0),
        # The share of c32 samples later than each bucket bound: where the p99 sits.
        "loop_lag_share_over_ms_c32": share_over(lag),
        "loop_lag_share_over_ms_c32_by_phase": lag_by_phase,
        # Of the stalled samples' time (lag > 5 ms) in the c32 phases: the loop thread running,
        # waiting for a core, or neither (the GIL, a blocking call). See observability/_loop.py.
        "loop_stall_causes_c32": {
            k: round(v / stalled_s, 3) if stalled_s else None for k, v in stalled.items()
        },
        "breaker_opened": int(opened),
        "redis_hit_share": round(l2 / (l2 + miss), 4) if l2 + miss else None,
        "errors": int(total_errors),
        "first_errors": errors,
        "ready_after_s": round(ready_s, 1),
    }


def with_targets(result: dict[str, Any]) -> dict[str, Any]:
    c1, c32 = result["distinct"]["c1"]["rps"], result["distinct"]["c32"]["rps"]
    ratio = round(c32 / c1, 2) if c1 else None
    result["ratios"] = {
        "distinct_c32_over_c1_rps": ratio,
        "routed_c32_over_c1_rps": round(
            result["routed"]["c32"]["rps"] / result["routed"]["c1"]["rps"], 2
        )
        if result["routed"]["c1"]["rps"]
        else None,
        "repeated_c32_over_c1_rps": round(
            result["repeated"]["c32"]["rps"] / result["repeated"]["c1"]["rps"], 2
        )
        if result["repeated"]["c1"]["rps"]
        else None,
    }
    lag, share = result["loop_lag_p99_ms"], result["redis_hit_share"]
    result["targets"] = TARGETS
    result["targets_met"] = {
        "distinct_c32_over_c1_rps": ratio is not None and ratio >= 3.0,
        "loop_lag_p99_ms": lag is not None and lag <= 5.0,
        "breaker_opened": result["breaker_opened"] == 0,
        "redis_hit_share": share is not None and share >= 0.95,
        "errors": result["errors"] == 0,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--workers", type=int, default=2, help="genesis serve --workers")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument(
        "--distinct-min",
        type=int,
        default=500,
        help="distinct.c32 runs on until this many questions were asked",
    )
    parser.add_argument("--max-seconds", type=float, default=180.0, help="cap of any phase")
    parser.add_argument("--port", type=int, default=18200)
    parser.add_argument("--redis-port", type=int, default=18241)
    parser.add_argument("--start-timeout", type=float, default=900.0)
    parser.add_argument(
        "--api-key",
        default=os.environ.get("GENESIS_API_KEY"),
        help="sent as a Bearer token (default: $GENESIS_API_KEY)",
    )
    parser.add_argument(
        "--server-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra --set for genesis serve (e.g. its API keys)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (home, log)")
    parser.add_argument(
        "--harness-nice",
        type=int,
        default=0,
        help="nice value of the load generator, Redis and the fake model server (0: none)",
    )
    args = parser.parse_args()
    harness_nice(args.harness_nice)
    work = Path(tempfile.mkdtemp(prefix="genesis-service-load-"))
    try:
        with redis_server(args.redis_port) as redis_url, fake_llm() as llm_url:
            result = asyncio.run(measure(args, llm_url, redis_url, work))
    finally:
        print(f"server log: {work / 'serve.log'}", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result = with_targets(result)
    result["config"] = {
        "workers": args.workers,
        "seconds_per_phase": args.seconds,
        "harness_nice": args.harness_nice,
        "agent": AGENT,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
