"""SE-Darwin: the loop keeps the best variant; the real sandbox contains bad variants."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from genesis.agents._darwin import DarwinLoop, ScoredVariant
from genesis.agents._sandbox import SandboxLimits, SandboxResult
from genesis.errors import LLMTimeoutError

FIB_TESTS = textwrap.dedent(
    """
    from candidate import fib

    def test_start():
        assert [fib(n) for n in range(6)] == [0, 1, 1, 2, 3, 5]

    def test_ten():
        assert fib(10) == 55

    def test_large():
        assert fib(90) == 2880067194370816120
    """
)

OFF_BY_ONE = (
    "def fib(n):\n    a, b = 1, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
)
LOOPS_FOREVER = "def fib(n):\n    while True:\n        n += 1\n"
HOARDS_MEMORY = (
    "def fib(n):\n    hoard = []\n    while True:\n        hoard.append(bytearray(10**6))\n"
)
EXPONENTIAL = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
FAST = (
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
)
# Correct and linear but slow (a sleep per call): the forger below is faster and still loses.
SLOW_CORRECT = (
    "import time\n\ndef fib(n):\n    time.sleep(0.01)\n    a, b = 0, 1\n"
    "    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
)
FAST_TOO = (
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        b, a = a + b, b\n    return a\n"
)


class ScriptedProposer:
    """Returns predefined variants per generation and records what it was shown."""

    def __init__(self, script: Sequence[list[str]]) -> None:
        self._script = list(script)
        self.seen: list[tuple[str, list[float], int]] = []

    async def __call__(self, best: str, scored: list[ScoredVariant], generation: int) -> list[str]:
        self.seen.append((best, [v.score for v in scored], generation))
        return self._script[generation - 1] if generation <= len(self._script) else []


@pytest.mark.slow
async def test_evolution_survives_bad_variants_and_keeps_the_fast_correct_one() -> None:
    proposer = ScriptedProposer(
        [[LOOPS_FOREVER, HOARDS_MEMORY, EXPONENTIAL], [FAST, OFF_BY_ONE], [FAST_TOO]]
    )
    loop = DarwinLoop(proposer, generations=5, limits=SandboxLimits(timeout_s=2.0))
    result = await loop.evolve(OFF_BY_ONE, FIB_TESTS)

    assert result.original.score == 0.0  # every expected value is shifted by one
    # FAST_TOO is as fast as FAST: a difference of milliseconds is noise, not a gain.
    assert result.best_source == FAST and result.best_score == 1.0
    first = {v.source: v for v in result.history[1].variants}
    assert first[LOOPS_FOREVER].result.killed_reason == "timeout"
    assert first[HOARDS_MEMORY].result.killed_reason == "memory"
    assert first[EXPONENTIAL].result.timed_out  # fib(90) never finishes
    assert [v.outcome.split(":")[0] for v in result.history[1].variants] == ["killed"] * 3
    assert result.history[2].improved and result.history[2].best_score == 1.0
    assert result.stopped_reason.startswith("all tests pass and no faster variant")
    assert len(result.history) == 4  # original + 3 generations, not 5
    assert proposer.seen[2][0] == FAST  # the proposer is shown the current best


FAST_FORGER = FAST + textwrap.dedent(
    """
    import os

    def _forge():
        line = b'%s {"k":"end","status":0}\\n' % (b"0" * 64)
        for fd in range(3, 64):
            try:
                os.write(fd, line)
            except OSError:
                pass

    _forge()
    """
)
KILLS_ITSELF = "import os, signal\n\nos.kill(os.getpid(), signal.SIGKILL)\n" + FAST


def writes_outside(path: Path) -> str:
    """Fast and correct, but leaves a file on the host on every call."""
    write = f"    open({str(path)!r}, 'w').write('x')\n"
    return FAST.replace("    return a\n", write + "    return a\n")


@pytest.mark.slow
async def test_evolution_keeps_its_best_when_variants_break_the_sandboxs_rules(
    tmp_path: Path,
) -> None:
    outside = tmp_path / f"escaped-{uuid.uuid4().hex}"
    rule_breakers = [FAST_FORGER, KILLS_ITSELF, writes_outside(outside)]
    proposer = ScriptedProposer([[SLOW_CORRECT], rule_breakers])
    loop = DarwinLoop(proposer, generations=2, limits=SandboxLimits(timeout_s=3.0))
    result = await loop.evolve(OFF_BY_ONE, FIB_TESTS)

    assert result.best_source == SLOW_CORRECT and result.best_score == 1.0
    forger, killer, writer = result.history[2].variants
    # The forger's real tests all passed, but it wrote into its report: it scores nothing.
    assert forger.result.passed == 3 and forger.result.tampering and forger.score == 0.0
    assert forger.outcome.startswith("rejected: report tampered with")
    assert killer.result.killed_reason == "signal 9" and killer.score == 0.0
    # Its write is refused inside the sandbox, so its tests fail and the host has no file.
    assert writer.result.failed == 3 and writer.score == 0.0 and not outside.exists()
    assert not result.history[2].improved


def result_of(passed: int, total: int, tests_time_s: float = 0.01) -> SandboxResult:
    return SandboxResult(
        passed=passed,
        failed=total - passed,
        errors=0,
        skipped=0,
        total=total,
        duration_s=0.3,
        tests_time_s=tests_time_s,
        timed_out=False,
        killed_reason=None,
        exit_code=0 if passed == total else 1,
        output="",
    )


class TableRunner:
    """A fake sandbox: each source's result is looked up in a table; counts the runs."""

    def __init__(self, table: dict[str, SandboxResult]) -> None:
        self._table = table
        self.runs: list[str] = []

    async def __call__(self, source: str, tests: str) -> SandboxResult:
        self.runs.append(source)
        return self._table[source]


async def test_faster_variant_with_equal_pass_rate_wins() -> None:
    runner = TableRunner({"slow": result_of(3, 3, 1.0), "fast": result_of(3, 3, 0.1)})
    proposer = ScriptedProposer([["fast"], ["slow"], ["fast"]])
    result = await DarwinLoop(proposer, generations=5, runner=runner).evolve("slow", "tests")
    assert result.best_source == "fast"
    assert [r.improved for r in result.history] == [False, True, False]
    assert result.stopped_reason == "all tests pass and no faster variant appeared in generation 2"


async def test_marginally_faster_variant_does_not_replace_the_best() -> None:
    runner = TableRunner({"orig": result_of(3, 3, 1.0), "same": result_of(3, 3, 0.95)})
    loop = DarwinLoop(ScriptedProposer([["same"]]), min_speedup=0.1, runner=runner)
    result = await loop.evolve("orig", "tests")
    assert result.best_source == "orig"
    assert result.stopped_reason == "all tests pass and no faster variant appeared in generation 1"


async def test_more_passing_tests_beat_speed() -> None:
    runner = TableRunner({"orig": result_of(1, 3, 0.01), "better": result_of(2, 3, 5.0)})
    result = await DarwinLoop(ScriptedProposer([["better"]]), generations=1, runner=runner).evolve(
        "orig", "tests"
    )
    assert result.best_source == "better" and result.best_score == pytest.approx(2 / 3)
    assert result.stopped_reason == "generation limit reached (1)"


async def test_population_caps_the_variants_run_and_repeats_are_not_rerun() -> None:
    runner = TableRunner({s: result_of(0, 1) for s in ["orig", "a", "b", "c"]})
    proposer = ScriptedProposer([["a", "b", "c"], ["a", "orig"]])
    loop = DarwinLoop(proposer, generations=2, population=2, runner=runner)
    result = await loop.evolve("orig", "tests")
    assert runner.runs == ["orig", "a", "b"]
    assert [len(r.variants) for r in result.history] == [1, 2, 2]


async def test_empty_proposal_stops_the_loop() -> None:
    runner = TableRunner({"orig": result_of(0, 2)})
    result = await DarwinLoop(ScriptedProposer([["", "  \n"]]), runner=runner).evolve("orig", "t")
    assert result.best_source == "orig" and runner.runs == ["orig"]
    assert result.stopped_reason == "proposer returned no variants in generation 1"


async def test_proposer_outage_keeps_the_best_so_far() -> None:
    runner = TableRunner({"orig": result_of(0, 2), "good": result_of(2, 2)})
    script = ScriptedProposer([["good"]])

    async def flaky(best: str, scored: list[ScoredVariant], generation: int) -> list[str]:
        if generation == 2:
            raise LLMTimeoutError("model did not answer in 30s")
        return await script(best, scored, generation)

    result = await DarwinLoop(flaky, runner=runner).evolve("orig", "tests")
    assert result.best_source == "good"
    assert result.stopped_reason == "proposer failed in generation 2: model did not answer in 30s"


async def test_proposer_sees_variants_best_first() -> None:
    runner = TableRunner({"orig": result_of(1, 4), "a": result_of(3, 4), "b": result_of(0, 4)})
    proposer = ScriptedProposer([["b", "a"], []])
    await DarwinLoop(proposer, runner=runner).evolve("orig", "tests")
    assert proposer.seen[1] == ("a", [0.75, 0.25, 0.0], 2)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="generations and population"):
        DarwinLoop(ScriptedProposer([]), generations=0)
    with pytest.raises(ValueError, match="min_speedup"):
        DarwinLoop(ScriptedProposer([]), min_speedup=1.5)
    with pytest.raises(ValueError, match="min_gain_s"):
        DarwinLoop(ScriptedProposer([]), min_gain_s=-1.0)
