"""The sandboxed test runner: counts, limits, process-group kill, clean environment."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from genesis.agents._sandbox import SandboxLimits, run_tests, run_tests_async

FAST = SandboxLimits(timeout_s=2.0, memory_mb=256, max_output_bytes=64_000)

ADD_TESTS = textwrap.dedent(
    """
    from candidate import add

    def test_small():
        assert add(1, 2) == 3

    def test_negative():
        assert add(-1, -1) == -2
    """
)


async def test_counts_passing_and_failing_tests() -> None:
    result = await run_tests_async(
        "def add(a, b):\n    return a + abs(b)\n", ADD_TESTS, limits=FAST
    )
    assert (result.passed, result.failed, result.errors, result.total) == (1, 1, 0, 2)
    assert result.pass_rate == 0.5 and not result.all_passed
    assert not result.timed_out and result.killed_reason is None
    assert "test_negative" in result.output


def test_sync_wrapper_runs_the_tests() -> None:
    result = run_tests("def add(a, b):\n    return a + b\n", ADD_TESTS, limits=FAST)
    assert result.all_passed and result.total == 2


async def test_sync_wrapper_refuses_inside_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="await run_tests_async"):
        run_tests("x = 1\n", ADD_TESTS, limits=FAST)


async def test_syntax_error_is_reported_as_an_error() -> None:
    result = await run_tests_async("def add(a, b) return a\n", ADD_TESTS, limits=FAST)
    assert result.errors == 1 and result.passed == 0 and result.pass_rate == 0.0
    assert "SyntaxError" in result.output


async def test_custom_module_name() -> None:
    tests = "from fast_math import add\n\ndef test_it():\n    assert add(2, 2) == 4\n"
    result = await run_tests_async(
        "def add(a, b):\n    return a + b\n", tests, module_name="fast_math", limits=FAST
    )
    assert result.all_passed


@pytest.mark.slow
async def test_endless_loop_is_killed_at_the_timeout() -> None:
    result = await run_tests_async(
        "def add(a, b):\n    while True:\n        pass\n", ADD_TESTS, limits=FAST
    )
    assert result.timed_out and result.killed_reason == "timeout"
    assert result.passed == 0 and result.pass_rate == 0.0


async def test_unbounded_allocation_hits_the_memory_limit() -> None:
    source = (
        "def add(a, b):\n    hoard = []\n    while True:\n        hoard.append(bytearray(10**6))\n"
    )
    result = await run_tests_async(source, ADD_TESTS, limits=FAST)
    assert result.killed_reason == "memory" and not result.timed_out
    assert result.passed == 0


@pytest.mark.slow
async def test_timeout_kills_children_of_the_tests(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    tests = textwrap.dedent(
        f"""
        import subprocess, time

        def test_spawns_and_hangs():
            child = subprocess.Popen(["sleep", "60"])
            open({str(pid_file)!r}, "w").write(str(child.pid))
            time.sleep(60)
        """
    )
    result = await run_tests_async("x = 1\n", tests, limits=FAST)
    assert result.timed_out
    assert not _alive(int(pid_file.read_text()))


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "zombie" not in status  # killed, waiting for init to reap it


async def test_parent_environment_does_not_reach_the_sandbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GENESIS_TEST_SECRET", "hunter2")
    tests = textwrap.dedent(
        """
        import os

        def test_no_secret():
            assert "GENESIS_TEST_SECRET" not in os.environ
            assert "hunter2" not in repr(dict(os.environ))

        def test_home_is_the_sandbox():
            assert os.environ["HOME"] == os.getcwd()
        """
    )
    result = await run_tests_async("x = 1\n", tests, limits=FAST)
    assert result.all_passed, result.output


def test_working_directory_is_removed_afterwards() -> None:
    tests = "import os\n\ndef test_where():\n    assert False, 'SANDBOX_DIR=' + os.getcwd() + '='\n"
    result = run_tests("x = 1\n", tests, limits=FAST)
    match = re.search(r"SANDBOX_DIR=(\S+?)=", result.output)
    assert match, result.output
    assert not Path(match.group(1)).exists()


async def test_output_is_cut_to_its_tail() -> None:
    tests = "def test_loud():\n    print('x' * 500_000)\n    print('THE END')\n    assert False\n"
    result = await run_tests_async("x = 1\n", tests, limits=SandboxLimits(max_output_bytes=2_000))
    assert len(result.output.encode()) <= 2_000
    assert "short test summary" in result.output


@pytest.mark.parametrize(
    ("source", "tests", "module", "message"),
    [
        ("x = 1", ADD_TESTS, "not-a-name", "module_name"),
        ("x = 1", ADD_TESTS, "test_mod", "module_name"),
        ("x = 1", "  ", "candidate", "tests are empty"),
        ("", ADD_TESTS, "candidate", "source is empty"),
    ],
)
async def test_bad_input_is_refused(source: str, tests: str, module: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await run_tests_async(source, tests, module_name=module, limits=FAST)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxLimits(memory_mb=8)
