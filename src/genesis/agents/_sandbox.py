"""Run a candidate module's pytest tests in a resource-limited subprocess.

Each run gets a fresh temporary directory (removed afterwards), a minimal environment (no
variable of the caller's environment is passed on), ``RLIMIT_AS`` / ``RLIMIT_CPU`` /
``RLIMIT_FSIZE`` set before ``exec``, and a wall-clock timeout after which the whole process
group is killed. This contains runaway candidates (endless loops, unbounded allocation,
floods of output); it is not a security boundary against hostile code, which can still
read and write what the user running Genesis can.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from genesis._sync import run_blocking
from genesis.errors import SandboxError

logger = logging.getLogger(__name__)

_MB = 1024 * 1024
# Files a candidate writes are capped too, so a test cannot fill the disk.
_MAX_FILE_BYTES = 64 * _MB
_READ_CHUNK = 65536
# After the group is killed, how long to wait for the pipe to close before giving up on it.
_DRAIN_GRACE_S = 1.0


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Per-run limits: wall-clock seconds, address space in MiB, bytes of output kept."""

    timeout_s: float = 5.0
    memory_mb: int = 256
    max_output_bytes: int = 64_000

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"SandboxLimits.timeout_s must be > 0, got {self.timeout_s}")
        if self.memory_mb < 64:
            raise ValueError(
                f"SandboxLimits.memory_mb must be >= 64 (Python needs it), got {self.memory_mb}"
            )
        if self.max_output_bytes < 0:
            raise ValueError(
                f"SandboxLimits.max_output_bytes must be >= 0, got {self.max_output_bytes}"
            )


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """What one sandboxed test run did.

    Counts come from pytest's JUnit XML; a run that was killed or crashed before writing it
    has ``total == 0``. ``killed_reason`` is ``"timeout"``, ``"memory"`` (a ``MemoryError``
    was raised under the address-space limit), ``"cpu"`` or ``"signal N"``; ``None`` when
    the run ended on its own. ``tests_time_s`` is the time pytest spent in the tests
    (without interpreter start-up); ``output`` is the tail of stdout and stderr.
    """

    passed: int
    failed: int
    errors: int
    skipped: int
    total: int
    duration_s: float
    tests_time_s: float | None
    timed_out: bool
    killed_reason: str | None
    exit_code: int | None
    output: str

    @property
    def pass_rate(self) -> float:
        """Passed tests over all tests run; 0.0 when none ran."""
        return self.passed / self.total if self.total else 0.0

    @property
    def all_passed(self) -> bool:
        return self.total > 0 and self.passed == self.total


@dataclass(frozen=True, slots=True)
class _Counts:
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    total: int = 0
    tests_time_s: float | None = None
    memory_error: bool = False


async def run_tests_async(
    source: str,
    tests: str,
    *,
    module_name: str = "candidate",
    limits: SandboxLimits | None = None,
) -> SandboxResult:
    """Write ``source`` as ``<module_name>.py`` and ``tests`` as ``test_<module_name>.py``
    into a fresh directory and run pytest on them under ``limits``.

    Raises :class:`SandboxError` only when the runner itself cannot start; anything the
    candidate does (fail, hang, exhaust memory, crash) is reported in the result.
    """
    _check_inputs(source, tests, module_name)
    limits = limits or SandboxLimits()
    workdir = Path(tempfile.mkdtemp(prefix="genesis-sandbox-"))
    try:
        report = _write_files(workdir, source, tests, module_name)
        return await _run(workdir, report, limits)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_tests(
    source: str,
    tests: str,
    *,
    module_name: str = "candidate",
    limits: SandboxLimits | None = None,
) -> SandboxResult:
    """Blocking :func:`run_tests_async`; not for use inside a running event loop."""
    return run_blocking(
        lambda: run_tests_async(source, tests, module_name=module_name, limits=limits),
        "run_tests",
        "run_tests_async",
    )


def _check_inputs(source: str, tests: str, module_name: str) -> None:
    if module_name in sys.stdlib_module_names:
        raise ValueError(f"module_name {module_name!r} would shadow the standard library")
    if not module_name.isidentifier() or module_name.startswith("test"):
        raise ValueError(
            f"module_name must be a Python identifier not starting with 'test', got {module_name!r}"
        )
    if not tests.strip():
        raise ValueError(
            "tests are empty: the sandbox needs at least one test to score a candidate"
        )
    if not source.strip():
        raise ValueError("source is empty: nothing to test")


def _write_files(workdir: Path, source: str, tests: str, module_name: str) -> Path:
    (workdir / f"{module_name}.py").write_text(source, encoding="utf-8")
    (workdir / f"test_{module_name}.py").write_text(tests, encoding="utf-8")
    # An own ini file pins the rootdir here, so no configuration from a parent is inherited.
    (workdir / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    # A random name, so a candidate cannot simply guess it to forge its own report.
    return workdir / f".report-{secrets.token_hex(8)}.xml"


def _command(report: Path) -> list[str]:
    return [
        sys.executable,
        "-I",  # ignore PYTHON* variables and the user site directory
        "-B",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={report}",
    ]


def _environment(workdir: Path) -> dict[str, str]:
    """A fresh environment: nothing of the caller's (secrets included) is passed on."""
    return {
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.defpath]),
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }


def _limiter(limits: SandboxLimits) -> Callable[[], None]:
    memory = limits.memory_mb * _MB
    # CPU time is only a backstop behind the wall clock, so give it a second of slack.
    cpu = int(limits.timeout_s) + 1

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (_MAX_FILE_BYTES, _MAX_FILE_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


async def _run(workdir: Path, report: Path, limits: SandboxLimits) -> SandboxResult:
    started = time.perf_counter()
    try:
        proc = await asyncio.create_subprocess_exec(
            *_command(report),
            cwd=workdir,
            env=_environment(workdir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_limiter(limits),
        )
    # SubprocessError: preexec_fn (setting the limits) failed in the child.
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxError(f"could not start the sandboxed test runner: {exc}") from exc
    assert proc.stdout is not None  # requested as a pipe above
    tail = _Tail(limits.max_output_bytes)
    reader = asyncio.create_task(tail.consume(proc.stdout))
    timed_out = await _wait(proc, limits.timeout_s)
    await _drain(reader)
    duration = time.perf_counter() - started
    counts = _read_report(report)
    return _result(proc.returncode, counts, timed_out, duration, tail.text())


async def _wait(proc: asyncio.subprocess.Process, timeout_s: float) -> bool:
    """Wait for ``proc``; on timeout kill its whole process group. True if it timed out."""
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
        return False
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        return True
    finally:
        # Children a test left behind die with the runner.
        _kill_group(proc.pid)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _drain(reader: asyncio.Task[None]) -> None:
    try:
        await asyncio.wait_for(reader, _DRAIN_GRACE_S)
    except TimeoutError:
        logger.warning(
            "sandbox output pipe still open %.1fs after the run; dropped", _DRAIN_GRACE_S
        )


class _Tail:
    """Keeps the last ``limit`` bytes of a stream, so a flood of output costs bounded memory."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buf = bytearray()

    async def consume(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_READ_CHUNK):
            self._buf += chunk
            if len(self._buf) > self._limit:
                del self._buf[: len(self._buf) - self._limit]

    def text(self) -> str:
        return self._buf.decode("utf-8", errors="replace")


def _read_report(report: Path) -> _Counts:
    """Counts from pytest's JUnit XML; empty counts when it was never (fully) written."""
    try:
        root = ET.parse(report).getroot()
    except (OSError, ET.ParseError):
        return _Counts()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return _Counts()
    # The candidate runs in the same process as pytest and could overwrite the report:
    # counts are a score, not a security boundary, and a mangled report scores nothing.
    try:
        total = int(suite.get("tests", 0))
        failed, errors = int(suite.get("failures", 0)), int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
    except ValueError:
        return _Counts()
    memory_error = any(
        "MemoryError" in (el.get("message") or "") + (el.text or "")
        for el in suite.iter()
        if el.tag in {"failure", "error"}
    )
    return _Counts(
        passed=max(total - failed - errors - skipped, 0),
        failed=failed,
        errors=errors,
        skipped=skipped,
        # Collection errors are reported as errors but not counted in "tests".
        total=max(total, failed + errors + skipped),
        tests_time_s=float(suite.get("time", 0.0)),
        memory_error=memory_error,
    )


def _result(
    code: int | None, counts: _Counts, timed_out: bool, duration: float, output: str
) -> SandboxResult:
    return SandboxResult(
        passed=counts.passed,
        failed=counts.failed,
        errors=counts.errors,
        skipped=counts.skipped,
        total=counts.total,
        duration_s=duration,
        tests_time_s=counts.tests_time_s,
        timed_out=timed_out,
        killed_reason=_killed_reason(code, counts, timed_out, output),
        exit_code=code,
        output=output,
    )


def _killed_reason(code: int | None, counts: _Counts, timed_out: bool, output: str) -> str | None:
    if timed_out:
        return "timeout"
    if counts.memory_error or (counts.total == 0 and "MemoryError" in output):
        return "memory"
    if code is not None and code < 0:
        return "cpu" if -code == signal.SIGXCPU else f"signal {-code}"
    return None
