"""SE-Darwin: evolve a piece of code against its tests, keeping the best variant.

Scoring: a variant's ``score`` is its pass rate (tests passed / tests run), and 0.0 when the
sandbox had to stop the run (timeout, memory, CPU, a signal, an exit before pytest finished)
or found its report tampered with: a variant that breaks the sandbox's rules never becomes
the best, whatever it passed. Between equal pass rates the faster variant wins,
speed being pytest's own time for the tests (without interpreter start-up); a variant
replaces the best only when it passes more tests, or as many but is both at least
``min_speedup`` (a fraction) and ``min_gain_s`` seconds faster, so timer noise on tests that
take milliseconds does not flip the winner.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from genesis.agents._sandbox import SandboxLimits, SandboxResult, run_tests_async
from genesis.errors import GenesisError

logger = logging.getLogger(__name__)

Runner = Callable[[str, str], Awaitable[SandboxResult]]


@dataclass(frozen=True, slots=True)
class ScoredVariant:
    """One evaluated variant: its source, its sandbox result and where it came from."""

    source: str
    result: SandboxResult
    generation: int
    index: int

    @property
    def score(self) -> float:
        """Pass rate in [0, 1], 0.0 for a run stopped or tampered with (module docstring)."""
        r = self.result
        return 0.0 if r.killed_reason or r.tampering else r.pass_rate

    @property
    def runtime_s(self) -> float:
        """Tests' run time (pytest's own), else the whole sandbox run's wall time."""
        r = self.result
        return r.tests_time_s if r.tests_time_s is not None else r.duration_s

    @property
    def outcome(self) -> str:
        """``"failed: 1/3 passed"``, ``"killed: timeout (0/3 passed)"``, ``"rejected: ..."``."""
        r = self.result
        if r.tampering:
            return f"rejected: report tampered with ({r.passed}/{r.total} passed)"
        if r.killed_reason:
            return f"killed: {r.killed_reason} ({r.passed}/{r.total} passed)"
        if r.total == 0:
            return "no tests ran"
        return f"{'passed' if r.all_passed else 'failed'}: {r.passed}/{r.total} passed"


@dataclass(slots=True)
class GenerationRecord:
    """Every variant scored in one generation (0 is the original) and the best after it."""

    generation: int
    variants: list[ScoredVariant]
    best_score: float
    improved: bool


@dataclass(slots=True)
class EvolutionResult:
    """The best variant found, the original, every generation, and why the loop stopped."""

    best: ScoredVariant
    original: ScoredVariant
    history: list[GenerationRecord] = field(default_factory=list)
    stopped_reason: str = ""

    @property
    def best_source(self) -> str:
        return self.best.source

    @property
    def best_score(self) -> float:
        return self.best.score


Proposer = Callable[[str, list[ScoredVariant], int], Awaitable[list[str]]]


class DarwinLoop:
    """Evolves code with an LLM ``propose`` hook and the sandboxed test runner.

    ``propose(best_source, scored, generation)`` returns new variants; ``scored`` is every
    variant evaluated so far, best first (so a prompt can show the best and its failures).
    At most ``population`` variants per generation are run, for at most ``generations``
    generations. ``runner`` defaults to :func:`run_tests_async` under ``limits``. A
    :class:`GenesisError` from ``propose`` (an LLM outage) stops the loop with the best so
    far; other exceptions propagate.
    """

    def __init__(
        self,
        propose: Proposer,
        *,
        generations: int = 3,
        population: int = 3,
        limits: SandboxLimits | None = None,
        min_speedup: float = 0.1,
        min_gain_s: float = 0.05,
        runner: Runner | None = None,
    ) -> None:
        if generations < 1 or population < 1:
            raise ValueError(
                f"generations and population must be >= 1, got {generations}, {population}"
            )
        if not 0.0 <= min_speedup < 1.0:
            raise ValueError(f"min_speedup must be in [0, 1), got {min_speedup}")
        if min_gain_s < 0:
            raise ValueError(f"min_gain_s must be >= 0, got {min_gain_s}")
        self._propose = propose
        self._generations = generations
        self._population = population
        self._min_speedup = min_speedup
        self._min_gain_s = min_gain_s
        self._run = runner or partial(_run_with_limits, limits or SandboxLimits())

    async def evolve(self, source: str, tests: str) -> EvolutionResult:
        """Score ``source``, then evolve it generation by generation; return the best."""
        original = ScoredVariant(source, await self._run(source, tests), 0, 0)
        logger.info("darwin: original %s", original.outcome)
        result = EvolutionResult(best=original, original=original)
        result.history.append(GenerationRecord(0, [original], original.score, False))
        seen = {source: original}
        for generation in range(1, self._generations + 1):
            stop = await self._generation(result, seen, tests, generation)
            if stop:
                result.stopped_reason = stop
                return result
        result.stopped_reason = f"generation limit reached ({self._generations})"
        return result

    def better(self, a: ScoredVariant, b: ScoredVariant) -> bool:
        """Whether ``a`` beats ``b``: higher pass rate, or equal and clearly faster."""
        if a.score != b.score:
            return a.score > b.score
        if a.score == 0:
            return False
        gain = b.runtime_s - a.runtime_s
        return gain >= self._min_gain_s and gain >= b.runtime_s * self._min_speedup

    async def _generation(
        self, result: EvolutionResult, seen: dict[str, ScoredVariant], tests: str, generation: int
    ) -> str | None:
        """Run one generation; the reason to stop, or None to go on."""
        ranked = sorted(seen.values(), key=_rank_key)
        try:
            proposals = await self._propose(result.best.source, ranked, generation)
        except GenesisError as exc:
            # An LLM outage ends the search but must not throw away the best found so far.
            logger.warning("darwin: proposer failed in generation %s: %s", generation, exc)
            return f"proposer failed in generation {generation}: {exc}"
        # A blank variant would be refused by the sandbox; it is simply not a candidate.
        proposals = [p for p in proposals if p.strip()]
        if not proposals:
            return f"proposer returned no variants in generation {generation}"
        if len(proposals) > self._population:
            logger.info("darwin: %s proposals, keeping %s", len(proposals), self._population)
        # One at a time: concurrent runs would share the CPUs and blur the speed comparison.
        scored = [
            await self._score(src, tests, generation, i, seen)
            for i, src in enumerate(proposals[: self._population])
        ]
        improved = self._take_best(result, scored)
        result.history.append(GenerationRecord(generation, scored, result.best.score, improved))
        if result.best.result.all_passed and not improved:
            # The best already passed everything before this generation, and got no faster.
            return f"all tests pass and no faster variant appeared in generation {generation}"
        return None

    async def _score(
        self, source: str, tests: str, generation: int, index: int, seen: dict[str, ScoredVariant]
    ) -> ScoredVariant:
        if source in seen:  # an LLM often repeats itself; the sandbox run would too
            return ScoredVariant(source, seen[source].result, generation, index)
        variant = ScoredVariant(source, await self._run(source, tests), generation, index)
        seen[source] = variant
        logger.info("darwin: generation %s variant %s: %s", generation, index, variant.outcome)
        return variant

    def _take_best(self, result: EvolutionResult, scored: list[ScoredVariant]) -> bool:
        improved = False
        for variant in scored:
            if self.better(variant, result.best):
                result.best, improved = variant, True
        return improved


async def _run_with_limits(limits: SandboxLimits, source: str, tests: str) -> SandboxResult:
    return await run_tests_async(source, tests, limits=limits)


def _rank_key(v: ScoredVariant) -> tuple[float, float]:
    return (-v.score, v.runtime_s)
