"""Several vLLM replicas behind one completions backend: prefix-affinity routing and failover.

Routing (``ReplicaRouter``, pure and synchronous so a simulation can drive it):

- ``prefix_affinity`` (default with more than one replica): the key is the chained hash (as
  vLLM's prefix cache computes it, :mod:`genesis.llm._blocks`) of the prompt's leading full
  16-token blocks, at most ``prefix_blocks`` of them. Genesis already holds the prompt as token
  IDs, so this costs a few hashes and no tokenization. The key is placed on a consistent-hash
  ring (``vnodes`` points per unit of weight); the first replica clockwise whose in-flight
  count stays within ``ceil(load_factor * (total + 1) * weight / total_weight)`` takes it
  (consistent hashing with bounded loads, Mirrokni, Thorup and Zadimoghaddam 2018), so no
  replica carries more than ``load_factor`` times its share. When the ring's first replica is
  unhealthy, the least-loaded healthy one takes the request instead.
- ``least_loaded``: fewest in-flight requests per unit of weight (ties: least recently picked).
- ``round_robin``: smooth weighted round robin (nginx's), over healthy replicas.

Health: each replica has a rate breaker (:class:`genesis._breaker.RateCircuitBreaker`) fed one
verdict per call; a refused connection opens it at once (the replica is down, not flaky). An
open replica is skipped. After ``reset_timeout_s`` it is half-open, and whichever comes first
takes the one probe: a background check (``GET /v1/models`` every ``health_interval_s``,
started with the first call) or a request. A successful probe takes the replica back, so a
replica that recovers while no traffic comes is back before the next request, and no user's
request has to be the probe. A readiness ping that reaches a half-open replica counts as its
probe too. Replicas whose breaker is open are still tried last when no other is left.

A check that lists the models proves the server is up, not that it generates: a replica that
answers ``/v1/models`` but fails its completions is opened again by its failure rate.

``ReplicatedCompletionsBackend.generate`` tries up to ``max_tries`` replicas within the
request's timeout before it raises, so the model registry retries or falls back to the baseline
model only when the replicas could not serve.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Self

import httpx
from pydantic import SecretStr

from genesis._breaker import RateCircuitBreaker
from genesis._http import is_connect_error
from genesis.config import redact_url
from genesis.errors import (
    ConfigError,
    LLMBadRequestError,
    LLMError,
    LLMRateLimitError,
    LLMServerError,
    LLMTimeoutError,
)
from genesis.llm._blocks import BLOCK_SIZE, DEFAULT_SEED, block_hashes
from genesis.llm._openai import CompletionsBackend, completions_payload
from genesis.llm._stream import StreamDelta
from genesis.llm._types import Generation, GenerationRequest

logger = logging.getLogger(__name__)

Policy = Literal["prefix_affinity", "least_loaded", "round_robin"]
POLICIES: tuple[Policy, ...] = ("prefix_affinity", "least_loaded", "round_robin")
_RETRYABLE = (LLMTimeoutError, LLMRateLimitError, LLMServerError)


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """One inference server: its base URL and its share of the traffic (``weight``)."""

    url: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ConfigError(f"llm.replicas: weight must be > 0, got {self.weight}")


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """A replica's breaker. The rate is high on purpose: a model that fails half its calls
    on every replica is the registry's business (retries, fallback), not a sick replica."""

    failure_rate: float = 0.8
    window: int = 40
    min_calls: int = 20
    reset_timeout_s: float = 10.0


class Replica:
    """A replica's routing state: breaker, in-flight count, requests served."""

    def __init__(self, spec: ReplicaSpec, breaker: RateCircuitBreaker, index: int) -> None:
        self.url = spec.url
        self.weight = spec.weight
        self.index = index
        self.breaker = breaker
        self.in_flight = 0
        self.served = 0
        self.last_pick = -1
        self.rr_current = 0.0

    @property
    def healthy(self) -> bool:
        return self.breaker.state != "open"

    def __repr__(self) -> str:
        return f"Replica({redact_url(self.url)!r}, in_flight={self.in_flight})"


class ReplicaRouter:
    """Orders replicas for a request; see the module docstring for the policies."""

    def __init__(
        self,
        specs: Sequence[ReplicaSpec],
        *,
        policy: Policy | None = None,
        load_factor: float = 1.25,
        prefix_blocks: int = 8,
        block_size: int = BLOCK_SIZE,
        vnodes: int = 64,
        seed: str = DEFAULT_SEED,
        breaker: BreakerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_router(specs, policy, load_factor, prefix_blocks)
        b = breaker or BreakerSettings()
        self.replicas = [
            Replica(
                spec,
                RateCircuitBreaker(
                    b.failure_rate,
                    b.window,
                    b.min_calls,
                    b.reset_timeout_s,
                    clock=clock,
                    name=f"replica-{i}",
                ),
                i,
            )
            for i, spec in enumerate(specs)
        ]
        self.policy: Policy = policy or ("prefix_affinity" if len(specs) > 1 else "least_loaded")
        self.load_factor = load_factor
        self.prefix_blocks = prefix_blocks
        self.block_size = block_size
        self._seed = seed
        self._picks = 0
        self._ring, self._owners = _build_ring(self.replicas, vnodes)

    def affinity_key(self, ids: Sequence[int] | Any) -> bytes | None:
        """The chained hash of the leading full blocks, or None when there is no full block."""
        hashes = block_hashes(
            ids, block_size=self.block_size, max_blocks=self.prefix_blocks, seed=self._seed
        )
        return hashes[-1] if hashes else None

    def order(self, key: bytes | None) -> list[Replica]:
        """Replicas in the order to try them: the chosen one first, open breakers last."""
        healthy = [r for r in self.replicas if r.healthy]
        sick = sorted((r for r in self.replicas if not r.healthy), key=self._load_rank)
        if not healthy:
            return sick
        if self.policy == "round_robin":
            return [*self._round_robin(healthy), *sick]
        if self.policy == "prefix_affinity" and key is not None:
            return [*self._affinity(key, healthy), *sick]
        return [*sorted(healthy, key=self._load_rank), *sick]

    def acquire(self, replica: Replica) -> None:
        replica.in_flight += 1
        replica.served += 1
        self._picks += 1
        replica.last_pick = self._picks

    def release(self, replica: Replica) -> None:
        replica.in_flight -= 1

    def _load_rank(self, r: Replica) -> tuple[float, int]:
        return (r.in_flight / r.weight, r.last_pick)

    def _affinity(self, key: bytes, healthy: list[Replica]) -> list[Replica]:
        ring_order = self._walk(key)
        if not ring_order[0].healthy:
            return sorted(healthy, key=self._load_rank)
        total = sum(r.in_flight for r in healthy) + 1
        weight = sum(r.weight for r in healthy)
        fits = [
            r
            for r in ring_order
            if r.healthy
            and r.in_flight + 1 <= math.ceil(self.load_factor * total * r.weight / weight)
        ]
        first = fits[0] if fits else min(healthy, key=self._load_rank)
        return [first, *(r for r in ring_order if r.healthy and r is not first)]

    def _walk(self, key: bytes) -> list[Replica]:
        """Distinct replicas clockwise from ``key`` on the ring."""
        start = bisect.bisect(self._ring, int.from_bytes(key[:8], "big"))
        seen: list[Replica] = []
        n = len(self._ring)
        for i in range(n):
            owner = self._owners[(start + i) % n]
            if owner not in seen:
                seen.append(owner)
                if len(seen) == len(self.replicas):
                    break
        return seen

    def _round_robin(self, healthy: list[Replica]) -> list[Replica]:
        # Smooth weighted round robin: each step adds every weight, the largest current
        # value wins and pays back the total (weights 5,1,1 give a,a,b,a,c,a,a).
        total = sum(r.weight for r in healthy)
        for r in healthy:
            r.rr_current += r.weight
        chosen = max(healthy, key=lambda r: (r.rr_current, -r.index))
        chosen.rr_current -= total
        return [chosen, *sorted((r for r in healthy if r is not chosen), key=self._load_rank)]


class ReplicatedCompletionsBackend:
    """``/v1/completions`` with token IDs over several replicas (an ``LLMBackend``)."""

    def __init__(
        self,
        replicas: Sequence[ReplicaSpec | str],
        *,
        api_key: SecretStr | str | None = None,
        client: httpx.AsyncClient | None = None,
        policy: Policy | None = None,
        load_factor: float = 1.25,
        prefix_blocks: int = 8,
        max_tries: int = 3,
        breaker: BreakerSettings | None = None,
        health_interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        specs = [ReplicaSpec(r) if isinstance(r, str) else r for r in replicas]
        if max_tries < 1:
            raise ConfigError(f"llm.replica_max_tries must be >= 1, got {max_tries}")
        if health_interval_s < 0:
            raise ConfigError(
                f"llm.replica_health_interval_s must be >= 0, got {health_interval_s}"
            )
        self.router = ReplicaRouter(
            specs,
            policy=policy,
            load_factor=load_factor,
            prefix_blocks=prefix_blocks,
            breaker=breaker,
            clock=clock,
        )
        self._backends = [CompletionsBackend(s.url, api_key=api_key, client=client) for s in specs]
        self._max_tries = max_tries
        self._health_interval_s = health_interval_s
        self._health_task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return "completions"

    def __repr__(self) -> str:
        urls = [redact_url(r.url) for r in self.router.replicas]
        return f"ReplicatedCompletionsBackend({urls!r}, policy={self.router.policy!r})"

    def health(self) -> list[dict[str, Any]]:
        """Per replica: redacted URL, breaker state, in-flight and served counts."""
        return [
            {
                "url": redact_url(r.url),
                "weight": r.weight,
                "state": r.breaker.state,
                "in_flight": r.in_flight,
                "served": r.served,
            }
            for r in self.router.replicas
        ]

    async def ping(self) -> dict[str, Any]:
        """Readiness: ``GET /v1/models`` on every replica at once; raises the last replica's
        ``LLMError`` when none answers, else reports how many did and each one's health.
        A half-open replica's answer is its probe (a success takes it back)."""
        replicas = self.router.replicas
        probing = [r.breaker.state == "half_open" and r.breaker.allow() for r in replicas]
        results = await asyncio.gather(*(b.ping() for b in self._backends), return_exceptions=True)
        for replica, probe, result in zip(replicas, probing, results, strict=True):
            if probe:
                _probe_verdict(replica, result)
        report = self.health()
        for row, result in zip(report, results, strict=True):
            row["up"] = not isinstance(result, BaseException)
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) == len(results):
            raise errors[-1]
        return {"replicas_up": len(results) - len(errors), "replicas": report}

    async def check_replicas(self, timeout_s: float = 2.0) -> int:
        """Probe every replica whose breaker is half-open (and whose probe is free) with
        ``GET /v1/models``, at once; returns how many came back."""
        due = [r for r in self.router.replicas if r.breaker.state == "half_open"]
        due = [r for r in due if r.breaker.allow()]
        if not due:
            return 0
        pings = (asyncio.wait_for(self._backends[r.index].ping(), timeout_s) for r in due)
        results = await asyncio.gather(*pings, return_exceptions=True)
        for replica, result in zip(due, results, strict=True):
            _probe_verdict(replica, result)
        back = sum(1 for r in due if r.breaker.state == "closed")
        if back:
            logger.info("%d replica(s) back after a health check", back)
        return back

    def _ensure_health_checks(self) -> None:
        """Start the background checks on the running loop (once; again after a failure)."""
        if self._health_interval_s <= 0 or len(self.router.replicas) < 2:
            return
        if self._health_task is not None and not self._health_task.done():
            return
        self._health_task = asyncio.get_running_loop().create_task(
            self._health_loop(), name="replica-health"
        )

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval_s)
            try:
                await self.check_replicas(timeout_s=max(0.5, self._health_interval_s))
            except Exception:  # keep checking: one bad round must not end the loop
                logger.exception("replica health check failed")

    async def generate(self, request: GenerationRequest) -> Generation:
        """Serve ``request`` on the routed replica, failing over to others within its timeout.

        Raises ``LLMBadRequestError`` at once (every replica would refuse it); otherwise, when
        no replica served, the last replica's error (``LLMTimeoutError`` if the time was up
        before any could be called).
        """
        if request.prompt_ids is None or len(request.prompt_ids) == 0:
            completions_payload(request)  # raises the backend's own LLMBadRequestError
        self._ensure_health_checks()
        deadline = time.monotonic() + request.timeout_s
        last: LLMError | None = None
        for replica in self._attempts(request, deadline):
            try:
                return await self._call(replica, request, deadline)
            except _RETRYABLE as exc:
                last = exc
        raise last or LLMTimeoutError(f"no time left to call a replica ({request.model!r})")

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        """:meth:`generate`'s routing and failover for a stream, until its first piece: once
        a replica has sent text, its errors end the stream (no other replica takes over)."""
        if request.prompt_ids is None or len(request.prompt_ids) == 0:
            completions_payload(request)
        self._ensure_health_checks()
        deadline = time.monotonic() + request.timeout_s
        last: LLMError | None = None
        for replica in self._attempts(request, deadline):
            self.router.acquire(replica)
            inner = self._backends[replica.index].stream(
                replace(request, timeout_s=deadline - time.monotonic())
            )
            try:
                first = await self._first(replica, inner)
            except _RETRYABLE as exc:
                last = exc
                await inner.aclose()
                self.router.release(replica)
                continue
            try:
                if first is not None:
                    yield first
                async for delta in inner:
                    yield delta
            finally:
                await inner.aclose()
                self.router.release(replica)
            return
        raise last or LLMTimeoutError(f"no time left to call a replica ({request.model!r})")

    async def _first(
        self, replica: Replica, inner: AsyncGenerator[StreamDelta, None]
    ) -> StreamDelta | None:
        try:
            first = await anext(inner, None)
        except LLMBadRequestError:
            replica.breaker.record_success()
            await inner.aclose()
            self.router.release(replica)
            raise
        except _RETRYABLE as exc:
            _record_failure(replica, exc)
            raise
        except BaseException:
            replica.breaker.release_probe()
            await inner.aclose()
            self.router.release(replica)
            raise
        replica.breaker.record_success()
        return first

    def _attempts(self, request: GenerationRequest, deadline: float) -> Iterator[Replica]:
        """The replicas to try in turn, at most ``max_tries``; breakers are asked lazily (a
        half-open one hands out its probe). When every breaker refuses, they are tried
        anyway rather than fail a request that no replica was asked to serve."""
        order = self.router.order(self.router.affinity_key(request.prompt_ids))
        tried = 0
        for replica in order:
            if tried >= self._max_tries or time.monotonic() >= deadline:
                return
            if replica.breaker.allow():
                tried += 1
                yield replica
        if tried == 0:
            for replica in order[: self._max_tries]:
                if time.monotonic() >= deadline:
                    return
                yield replica

    async def _call(
        self, replica: Replica, request: GenerationRequest, deadline: float
    ) -> Generation:
        backend = self._backends[replica.index]
        self.router.acquire(replica)
        try:
            generation = await backend.generate(
                replace(request, timeout_s=deadline - time.monotonic())
            )
        except LLMBadRequestError:
            replica.breaker.record_success()  # it answered: it is up
            raise
        except _RETRYABLE as exc:
            _record_failure(replica, exc)
            raise
        except BaseException:
            replica.breaker.release_probe()
            raise
        finally:
            self.router.release(replica)
        replica.breaker.record_success()
        return generation

    async def aclose(self) -> None:
        task, self._health_task = self._health_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for backend in self._backends:
            await backend.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _probe_verdict(replica: Replica, result: object) -> None:
    """A health probe's outcome: an answer closes the breaker, an error opens it again, and
    anything else (cancelled) frees the probe for the next caller."""
    if not isinstance(result, BaseException):
        replica.breaker.record_success()
    elif isinstance(result, (LLMError, TimeoutError)):
        replica.breaker.record_failure()
    else:
        replica.breaker.release_probe()


def _record_failure(replica: Replica, exc: LLMError) -> None:
    if is_connect_error(exc.__cause__):
        if replica.breaker.state != "open":
            logger.warning("replica %s refused the connection; marked down", replica.index)
        replica.breaker.force_open()
    else:
        replica.breaker.record_failure()


def _build_ring(replicas: list[Replica], vnodes: int) -> tuple[list[int], list[Replica]]:
    points: list[tuple[int, Replica]] = []
    for r in replicas:
        for i in range(max(1, round(vnodes * r.weight))):
            digest = hashlib.sha256(f"{r.url}#{i}".encode()).digest()
            points.append((int.from_bytes(digest[:8], "big"), r))
    points.sort(key=lambda p: p[0])
    return [p[0] for p in points], [p[1] for p in points]


def _check_router(
    specs: Sequence[ReplicaSpec], policy: str | None, load_factor: float, prefix_blocks: int
) -> None:
    if not specs:
        raise ConfigError("llm.replicas: at least one replica is needed")
    if len({s.url for s in specs}) != len(specs):
        raise ConfigError("llm.replicas: a base URL is listed twice")
    if policy is not None and policy not in POLICIES:
        raise ConfigError(f"llm.replica_policy: unknown {policy!r}; use one of {POLICIES}")
    if load_factor < 1:
        raise ConfigError(f"llm.replica_load_factor must be >= 1, got {load_factor}")
    if prefix_blocks < 1:
        raise ConfigError(f"llm.replica_prefix_blocks must be >= 1, got {prefix_blocks}")
