"""Model registry: per agent, a fine-tuned model with retries, falling back to a baseline.

One call walks ``[fine-tuned, baseline]``. Each model gets retries with exponential backoff
and jitter (tenacity ``AsyncRetrying``) for retryable errors only (timeout, 429, 5xx), every
attempt bounded by ``attempt_timeout_s`` and everything by ``total_budget_s``: the stop rule
refuses a retry whose backoff would end past the deadline, and each attempt's timeout is cut
to the time left. A circuit breaker per model (per agent and model where several agents share
the model) skips a model that keeps failing; it judges the failure *rate* of whole requests
over a sliding window (one verdict per request on a model, not one per retry), so a flaky model
that retries rescue stays in service while a dead one is skipped. When the fine-tuned model
fails, part of the budget is still left for the baseline (``_reserve``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from genesis._breaker import KeyedRateBreaker
from genesis._redact import redact_excerpt
from genesis._sync import run_blocking
from genesis.errors import (
    AllModelsFailedError,
    CircuitOpenError,
    LLMBadRequestError,
    LLMError,
    LLMRateLimitError,
    LLMServerError,
    LLMTimeoutError,
    UnknownAgentError,
)
from genesis.llm._stream import OpenedStream, StreamDelta, StreamingBackend
from genesis.llm._types import Generation, GenerationRequest, LLMBackend, Message

logger = logging.getLogger(__name__)

RETRYABLE: tuple[type[LLMError], ...] = (LLMTimeoutError, LLMRateLimitError, LLMServerError)
# Extra time past an attempt's timeout before the registry cancels a backend that ignores
# ``request.timeout_s`` (the backend's own, more precise error normally comes first).
_GRACE_S = 0.25
_REASON_CHARS = 300

FallbackHook = Callable[[str, str, str, str], None]
T = TypeVar("T")


class KeyedBreaker(Protocol):
    """What the registry needs of a breaker: one circuit per key, one verdict per request."""

    def state(self, key: str) -> str: ...

    def allow(self, key: str) -> bool: ...

    def release_probe(self, key: str) -> None: ...

    def record_success(self, key: str) -> None: ...

    def record_failure(self, key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """The models of one agent: ``finetuned`` (optional) first, ``baseline`` as fallback."""

    finetuned: str | None
    baseline: str

    def __post_init__(self) -> None:
        if not self.baseline:
            raise ValueError("ModelRoute.baseline must name a model")


@dataclass(slots=True)
class RegistryResult:
    """What the registry did: the answer, which model served it, and why it fell back."""

    generation: Generation
    agent: str
    model: str
    fell_back: bool
    reasons: list[str] = field(default_factory=list)
    attempts: int = 0


@dataclass(slots=True)
class _Tally:
    attempts: int = 0


def reason_code(exc: BaseException) -> str:
    """Short label of a failure, for counters and metric labels (never a message)."""
    codes: list[tuple[type[BaseException], str]] = [
        (CircuitOpenError, "circuit_open"),
        (LLMTimeoutError, "timeout"),
        (LLMRateLimitError, "rate_limited"),
        (LLMServerError, "server_error"),
        (LLMBadRequestError, "bad_request"),
    ]
    return next((code for cls, code in codes if isinstance(exc, cls)), "error")


class ModelRegistry:
    """Routes an agent's request to its fine-tuned model, with retries and fallback."""

    def __init__(
        self,
        routes: Mapping[str, ModelRoute],
        backend: LLMBackend,
        *,
        total_budget_s: float = 30.0,
        attempt_timeout_s: float = 10.0,
        max_retries: int = 2,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 2.0,
        backoff_jitter_s: float = 0.1,
        breaker_failures: int = 10,
        breaker_reset_s: float = 30.0,
        breaker_failure_rate: float = 0.5,
        breaker_window: int = 20,
        breaker: KeyedBreaker | None = None,
        on_fallback: FallbackHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        _check_settings(total_budget_s, attempt_timeout_s, max_retries)
        self._routes = dict(routes)
        self._backend = backend
        self._budget = total_budget_s
        self._attempt_timeout = attempt_timeout_s
        self._max_retries = max_retries
        self._wait = exponential_jitter(backoff_base_s, backoff_max_s, backoff_jitter_s, rng)
        # breaker_failures: the fewest request verdicts in the window before the rate counts.
        self._breaker: KeyedBreaker = breaker or KeyedRateBreaker(
            breaker_failure_rate,
            max(breaker_window, breaker_failures),
            breaker_failures,
            breaker_reset_s,
            clock=clock,
        )
        self._breaker_keys = _breaker_keys(self._routes)
        self._on_fallback = on_fallback
        self._clock = clock
        self._sleep = sleep
        self._fallbacks: Counter[tuple[str, str]] = Counter()

    @property
    def agents(self) -> list[str]:
        return sorted(self._routes)

    @property
    def breaker(self) -> KeyedBreaker:
        return self._breaker

    def breaker_key(self, agent: str, model: str) -> str:
        """``model``, or ``agent:model`` when several agents share ``model``: one agent's
        failing requests must not open a shared baseline for every agent."""
        return self._breaker_keys.get((agent, model), model)

    @property
    def backend(self) -> LLMBackend:
        return self._backend

    @property
    def fallback_counts(self) -> dict[tuple[str, str], int]:
        """Fallbacks so far, keyed by ``(agent, reason)`` (reason as in :func:`reason_code`)."""
        return dict(self._fallbacks)

    def route(self, agent: str) -> ModelRoute:
        try:
            return self._routes[agent]
        except KeyError:
            known = ", ".join(self.agents) or "(none)"
            raise UnknownAgentError(f"unknown agent {agent!r}; known agents: {known}") from None

    async def chat_async(
        self,
        agent: str,
        messages: Sequence[Message],
        *,
        use_finetuned: bool = True,
        use_fallback: bool = True,
        **gen_kwargs: Any,
    ) -> RegistryResult:
        """Answer chat ``messages`` for ``agent``; ``gen_kwargs`` are GenerationRequest fields."""
        request = _chat_request(messages, gen_kwargs)
        return await self.generate(
            agent, request, use_finetuned=use_finetuned, use_fallback=use_fallback
        )

    def chat(
        self,
        agent: str,
        messages: Sequence[Message],
        *,
        use_finetuned: bool = True,
        use_fallback: bool = True,
        **gen_kwargs: Any,
    ) -> RegistryResult:
        """Blocking :meth:`chat_async`; refuses to run inside a running event loop."""
        return run_blocking(
            lambda: self._then_release(
                self.chat_async(
                    agent,
                    messages,
                    use_finetuned=use_finetuned,
                    use_fallback=use_fallback,
                    **gen_kwargs,
                )
            ),
            "ModelRegistry.chat",
            "chat_async",
        )

    async def _then_release(self, call: Awaitable[RegistryResult]) -> RegistryResult:
        # Connections opened in this throwaway event loop must not outlive it.
        try:
            return await call
        finally:
            await self._backend.aclose()

    async def generate(
        self,
        agent: str,
        request: GenerationRequest,
        *,
        use_finetuned: bool = True,
        use_fallback: bool = True,
    ) -> RegistryResult:
        """Answer ``request`` (``request.model`` is replaced by the route's models).

        Raises ``UnknownAgentError``; with ``use_fallback=False`` the first model's own
        ``LLMError``; otherwise ``AllModelsFailedError`` whose ``reasons`` maps each model
        tried to why it failed. Returns within ``total_budget_s`` (plus a small grace).
        """
        call = self._backend.generate
        generation, model, index, reasons, tally = await self._walk(
            agent, request, call, use_finetuned=use_finetuned, use_fallback=use_fallback
        )
        return RegistryResult(generation, agent, model, index > 0, reasons, tally.attempts)

    async def open_stream(
        self,
        agent: str,
        request: GenerationRequest,
        *,
        use_finetuned: bool = True,
        use_fallback: bool = True,
    ) -> OpenedStream:
        """Start a streamed answer: retries and fallback as :meth:`generate`, but only until
        the first piece has arrived; after that, errors come out of the stream itself (a
        client may have seen text from this model, so no other model may take over).

        A backend that cannot stream answers with one piece (its whole generation).
        """
        opened, model, index, _, _ = await self._walk(
            agent,
            request,
            self._first_piece,
            use_finetuned=use_finetuned,
            use_fallback=use_fallback,
        )
        opened.model, opened.fell_back = model, index > 0
        return opened

    async def _first_piece(self, request: GenerationRequest) -> OpenedStream:
        if not isinstance(self._backend, StreamingBackend):
            whole = await self._backend.generate(request)
            delta = StreamDelta(whole.text, whole.finish_reason, whole.usage, whole.model)
            return OpenedStream(request.model, delta, None)
        stream = self._backend.stream(request)
        try:
            first = await anext(stream, StreamDelta(finish_reason="stop"))
        except BaseException:
            await stream.aclose()
            raise
        return OpenedStream(request.model, first, stream)

    async def _walk(
        self,
        agent: str,
        request: GenerationRequest,
        call: Callable[[GenerationRequest], Awaitable[T]],
        *,
        use_finetuned: bool,
        use_fallback: bool,
    ) -> tuple[T, str, int, list[str], _Tally]:
        """Walk ``[fine-tuned, baseline]`` with ``call``: the first result, with which model
        gave it, its position, the reasons of earlier failures and the attempt count."""
        models = self._candidates(self.route(agent), use_finetuned, use_fallback)
        deadline = self._clock() + self._budget
        tally, reasons, errors = _Tally(), [], {}
        for index, model in enumerate(models):
            last = index == len(models) - 1
            try:
                result = await self._serve(
                    agent, model, request, self._phase_end(deadline, last), tally, call
                )
            except LLMError as exc:
                if not use_fallback:
                    raise
                errors[model] = f"{type(exc).__name__}: {safe_message(exc)}"
                reasons.append(f"{model}: {reason_code(exc)}: {safe_message(exc)}")
                if not last:
                    self._fell_back(agent, model, models[index + 1], exc)
                continue
            return result, model, index, reasons, tally
        raise _all_failed(agent, errors)

    def generator(
        self, agent: str, *, use_finetuned: bool = True, use_fallback: bool = True
    ) -> Callable[[GenerationRequest], Awaitable[Generation]]:
        """``request -> Generation`` for ``agent``, the shape the RAG pipeline takes.

        Which model served is still visible as ``Generation.model``; fallbacks are counted.
        """
        self.route(agent)  # fail now, not on the first request

        async def generate(request: GenerationRequest) -> Generation:
            result = await self.generate(
                agent, request, use_finetuned=use_finetuned, use_fallback=use_fallback
            )
            return result.generation

        return generate

    async def aclose(self) -> None:
        """Release the backend's connections (it may be used again afterwards)."""
        await self._backend.aclose()

    def _candidates(self, route: ModelRoute, use_finetuned: bool, use_fallback: bool) -> list[str]:
        if use_finetuned and route.finetuned:
            return [route.finetuned, route.baseline] if use_fallback else [route.finetuned]
        return [route.baseline]

    def _phase_end(self, deadline: float, last: bool) -> float:
        # Keep time for the baseline: the fine-tuned model may not eat the whole budget.
        return deadline if last else deadline - min(self._attempt_timeout, self._budget / 2)

    async def _serve(
        self,
        agent: str,
        model: str,
        request: GenerationRequest,
        deadline: float,
        tally: _Tally,
        call: Callable[[GenerationRequest], Awaitable[T]],
    ) -> T:
        """One model, with retries; the breaker hears one verdict for the whole request."""
        key = self.breaker_key(agent, model)
        if not self._breaker.allow(key):
            raise CircuitOpenError(f"circuit breaker for model {model!r} is open; not called")
        try:
            result = await self._retried(model, request, deadline, tally, call)
        except RETRYABLE:
            self._breaker.record_failure(key)
            raise
        except LLMBadRequestError:
            # The model answered (it refused this request): it is up, so a half-open probe
            # must not be lost.
            self._breaker.record_success(key)
            raise
        except BaseException:  # cancelled: no verdict
            self._breaker.release_probe(key)
            raise
        self._breaker.record_success(key)
        return result

    async def _retried(
        self,
        model: str,
        request: GenerationRequest,
        deadline: float,
        tally: _Tally,
        call: Callable[[GenerationRequest], Awaitable[T]],
    ) -> T:
        """One model, with retries inside ``deadline``; raises its last ``LLMError``."""
        retrying = AsyncRetrying(
            stop=self._stop_rule(deadline),
            wait=self._wait,
            retry=retry_if_exception_type(RETRYABLE),
            sleep=self._sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(model, request, deadline, tally, call)
        raise AssertionError("unreachable: tenacity re-raises or returns")  # pragma: no cover

    def _stop_rule(self, deadline: float) -> Callable[[RetryCallState], bool]:
        def stop(state: RetryCallState) -> bool:
            if state.attempt_number > self._max_retries:
                return True
            return self._clock() + state.upcoming_sleep >= deadline

        return stop

    async def _attempt(
        self,
        model: str,
        request: GenerationRequest,
        deadline: float,
        tally: _Tally,
        call: Callable[[GenerationRequest], Awaitable[T]],
    ) -> T:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise LLMTimeoutError(f"time budget spent before model {model!r} could be called")
        tally.attempts += 1
        timeout = min(self._attempt_timeout, remaining)
        try:
            async with asyncio.timeout(timeout + _GRACE_S):
                result = await call(replace(request, model=model, timeout_s=timeout))
        except TimeoutError as exc:
            raise LLMTimeoutError(f"model {model!r} gave no answer within {timeout:.2f}s") from exc
        return result

    def _fell_back(self, agent: str, from_model: str, to_model: str, exc: LLMError) -> None:
        reason = reason_code(exc)
        self._fallbacks[(agent, reason)] += 1
        logger.warning(
            "agent %s: model %s failed (%s: %s); falling back to %s",
            agent,
            from_model,
            reason,
            safe_message(exc),
            to_model,
            extra={
                "agent": agent,
                "from_model": from_model,
                "to_model": to_model,
                "reason": reason,
            },
        )
        if self._on_fallback is None:
            return
        try:
            self._on_fallback(agent, from_model, to_model, reason)
        except Exception:  # a metrics hook must never fail a request
            logger.exception("on_fallback hook failed for agent %s", agent)


def exponential_jitter(
    base_s: float, max_s: float, jitter_s: float, rng: random.Random | None = None
) -> Callable[[RetryCallState], float]:
    """Tenacity wait: ``min(max_s, base_s * 2**(n-1)) + uniform(0, jitter_s)`` after attempt n.

    Written here rather than tenacity's ``wait_exponential_jitter`` because its ``initial``
    argument is deprecated in tenacity 9 while ``multiplier`` does not exist in 8.2 (our floor).
    """
    source = rng or random.Random()

    def wait(state: RetryCallState) -> float:
        backoff = min(max_s, base_s * 2.0 ** (state.attempt_number - 1))
        return backoff + (source.uniform(0.0, jitter_s) if jitter_s > 0 else 0.0)

    return wait


def safe_message(exc: BaseException) -> str:
    """``str(exc)`` fit for a client and a log: redacted and bounded.

    The HTTP backends already keep upstream text out of their messages; this guards the
    fallback and ``AllModelsFailedError`` texts against any other backend that does not.
    """
    return redact_excerpt(str(exc), _REASON_CHARS)


def _check_settings(total_budget_s: float, attempt_timeout_s: float, max_retries: int) -> None:
    if total_budget_s <= 0:
        raise ValueError(f"total_budget_s must be > 0, got {total_budget_s}")
    if attempt_timeout_s <= 0:
        raise ValueError(f"attempt_timeout_s must be > 0, got {attempt_timeout_s}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")


def _chat_request(messages: Sequence[Message], gen_kwargs: dict[str, Any]) -> GenerationRequest:
    if not messages:
        raise ValueError("messages must not be empty")
    user = [m.content for m in messages if m.role == "user"]
    options = {"query": user[-1] if user else "", **gen_kwargs}
    try:
        return GenerationRequest(model="", messages=list(messages), **options)
    except TypeError as exc:
        raise TypeError(f"unknown generation option in {sorted(gen_kwargs)}: {exc}") from exc


def _breaker_keys(routes: Mapping[str, ModelRoute]) -> dict[tuple[str, str], str]:
    users: dict[str, set[str]] = {}
    for agent, route in routes.items():
        for model in (route.finetuned, route.baseline):
            if model:
                users.setdefault(model, set()).add(agent)
    return {
        (agent, model): f"{agent}:{model}" if len(agents) > 1 else model
        for model, agents in users.items()
        for agent in agents
    }


def _all_failed(agent: str, errors: dict[str, str]) -> AllModelsFailedError:
    detail = "; ".join(f"{model}: {why}" for model, why in errors.items())
    return AllModelsFailedError(f"agent {agent!r}: every model failed: {detail}", errors)
