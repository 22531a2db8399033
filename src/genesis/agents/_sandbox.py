"""Run a candidate module's pytest tests in a sandbox that is a boundary.

**What the candidate gets.** Its module, its tests and a ``pytest.ini`` in ``/sandbox`` (a
64 MiB tmpfs: its folder, working directory and ``HOME``), a 16 MiB tmpfs at ``/tmp`` and at
``/dev/shm``; read-only: ``/usr`` (with ``/bin``, ``/lib``... as on the host), the Python
installation that runs Genesis (prefix, base prefix, the site directories of pytest and its
dependencies, each at its own path), a fresh ``/proc`` and a minimal ``/dev``. Nothing else
of the host's filesystem exists inside: no ``/etc``, no ``/home``, no repository; ``/root``
only as the path to a Python directory bound there. The root and ``/dev`` are remounted
read-only, so the sized tmpfs mounts are the only writable places, and all they hold is gone
with the run. It runs in its own user, PID, mount, network, IPC, UTS and cgroup namespaces:
no network at all (the loopback of an empty namespace reaches no host service), no host
process in sight, hostname ``sandbox``, no nested user namespaces, no capabilities. On the
host it runs as ``nobody`` (65534) when Genesis runs as root, else as Genesis's own user; runs
are kept apart by their namespaces, not by their uid. No variable of the caller's environment
is passed on. ``RLIMIT_AS`` / ``RLIMIT_CPU`` / ``RLIMIT_FSIZE`` are set before ``exec``; after
the wall-clock timeout the whole process group is killed, and since the tests run in their
own PID namespace, the end of its first process (bubblewrap's reaper, which dies with its
parent) kills every process they started, even one that left the process group and session.

**Why bubblewrap, and why a dropped user first.** bubblewrap (Debian package ``bubblewrap``,
0.8 or later for ``--size`` and ``--disable-userns``; Debian 12 ships 0.8.0) builds the
read-only view, the namespaces and the sized tmpfs mounts from one command line, needs no
privilege, and runs here and in CI (root, Debian 12). Run as root, its user namespace maps
the sandboxed "nobody" to root outside, which could still read root's files (seen here:
``/etc/shadow``). So when Genesis runs as root, bubblewrap is started through ``setpriv``
(util-linux) as nobody, with no groups, capabilities or new privileges. nobody cannot
traverse ``/root`` (mode 700), where the interpreter or the venv often live (pyenv,
``/root/.venv``), and bubblewrap resolves its bind sources as the user it runs as. So, as
root, the Python directories are first bind-mounted read-only onto empty directories of a
staging folder that nobody may pass through (mode 711), in a private mount namespace made by
``unshare`` (util-linux) with ``mount`` that only this run sees, and bubblewrap binds them
from there to their original paths. Run by an unprivileged user, Genesis starts bubblewrap
directly, binding the directories from where they are. ``unshare`` alone with a dropped user
would need the same staging and, by hand, every mount bubblewrap makes. There is no fallback:
a missing tool raises :class:`SandboxError` naming its Debian package, and a sandbox that does
not start raises it too, never an unsandboxed run.

**The report.** The candidate runs inside pytest's own process, so no file it can reach can
hold a trustworthy report. :mod:`genesis.agents._sandbox_runner` (copied in read-only) reads a
one-off key from a pipe and closes it before pytest collects anything, then reports every
collected test and every test phase as it happens, one HMAC-signed line each, into a pipe
whose read end only this process holds; :mod:`genesis.agents._sandbox_report` tallies them as
they arrive. So rewriting files, ``atexit`` hooks, exiting or killing itself after some tests
cannot change the outcome already reported, tests that never finished count as errors, and
lines the candidate writes into the pipe fail authentication, are dropped and reported as
``tampering``. The limit, honestly: the candidate shares an interpreter with pytest and its
tests, so a candidate written to attack its judge can patch pytest or the test module, call
the reporter itself or dig the key out of its own memory, and so lie about its own score.
That is contained to a wrong score for that candidate, never anything outside the sandbox;
callers that rank candidates should also distrust any run with ``tampering`` set.

Not bounded: the number of processes (only the timeout ends a fork bomb), and memory as a
whole (``RLIMIT_AS`` is per process, the tmpfs mounts add up to 96 MiB; there is no cgroup).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from genesis._sync import run_blocking
from genesis.agents._sandbox_report import Counts, ReportTally
from genesis.errors import SandboxError

logger = logging.getLogger(__name__)

_MB = 1024 * 1024
# No file may grow past this (RLIMIT_FSIZE), whatever the room where it is written.
_MAX_FILE_BYTES = 64 * _MB
# The sandbox's writable places are memory: each is sized.
_WORK_BYTES = 64 * _MB
_SCRATCH_BYTES = 16 * _MB
_READ_CHUNK = 65536
# After the group is killed, how long to wait for the pipes to close before giving up on them.
_DRAIN_GRACE_S = 1.0
_KEY_BYTES = 32
_NOBODY = 65534

# Paths inside the sandbox.
_WORK = "/sandbox"
_RUNNER = "/run/genesis-sandbox/runner.py"
_RUNNER_SOURCE = Path(__file__).with_name("_sandbox_runner.py")

# Top-level system directories: bound read-only, or made the symlinks they are (merged /usr).
_SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What the runner imports must be visible inside: pytest and its dependencies.
_RUNNER_PACKAGES = ("pytest", "_pytest", "pluggy", "iniconfig", "packaging")
_PACKAGE_OF = {
    "bwrap": "bubblewrap",
    "unshare": "util-linux",
    "setpriv": "util-linux",
    "mount": "mount",
}
# As root: bind each "source stage" pair in this run's own mount namespace, then exec the rest.
_STAGE_SCRIPT = (
    'mount=$1; shift; while [ "$1" != -- ]; do '
    '"$mount" --rbind -o ro "$1" "$2" || exit 125; shift 2; done; shift; exec "$@"'
)


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

    Counts come from the runner's signed records, tallied as they arrived: ``total`` is every
    test collected (plus collection errors), and a collected test that never finished (the
    run was killed or exited) is an error. ``killed_reason`` says why the run ended before
    pytest finished: ``"timeout"``, ``"memory"`` (a ``MemoryError`` under the address-space
    limit), ``"cpu"``, ``"signal N"`` or ``"exited early (exit code N)"``; ``None`` when
    pytest finished on its own. ``tampering`` says what in the report could not be trusted
    (lines that failed authentication, repeated records); ``None`` for a clean report.
    ``tests_time_s`` is the time pytest spent in the tests' phases (without start-up and
    collection); ``output`` is the tail of stdout and stderr.
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
    tampering: str | None = None

    @property
    def pass_rate(self) -> float:
        """Passed tests over all tests run; 0.0 when none ran."""
        return self.passed / self.total if self.total else 0.0

    @property
    def all_passed(self) -> bool:
        return self.total > 0 and self.passed == self.total


async def run_tests_async(
    source: str,
    tests: str,
    *,
    module_name: str = "candidate",
    limits: SandboxLimits | None = None,
) -> SandboxResult:
    """Put ``source`` as ``<module_name>.py`` and ``tests`` as ``test_<module_name>.py`` into
    a fresh sandbox and run pytest on them under ``limits``.

    Raises :class:`SandboxError` only when the sandbox itself cannot start (a missing tool,
    no user namespaces); anything the candidate does (fail, hang, exhaust memory, crash,
    tamper with its report) is reported in the result.
    """
    _check_inputs(source, tests, module_name)
    limits = limits or SandboxLimits()
    files = {
        f"{module_name}.py": source,
        f"test_{module_name}.py": tests,
        # An own ini file pins the rootdir here, so no configuration from a parent is read.
        "pytest.ini": "[pytest]\n",
    }
    with contextlib.ExitStack() as stack:
        launch = _prepare(_host(), files, f"test_{module_name}.py", stack)
        return await _run(launch, limits)


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


# -- what the sandbox takes from the host ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Host:
    """Tools and directories of this machine the sandbox is built from (resolved per run)."""

    bwrap: str
    # unshare, setpriv, mount: only when Genesis runs as root (see the module docstring).
    stage: tuple[str, str, str] | None
    python: str
    python_dirs: tuple[str, ...]
    # Where pytest and its dependencies were found, for the runner's sys.path.
    site_dirs: tuple[str, ...]
    # (path, symlink target or None for a read-only bind)
    system: tuple[tuple[str, str | None], ...]


def _host() -> _Host:
    bwrap, stage = _tool("bwrap"), None
    if os.geteuid() == 0:
        stage = (_tool("unshare"), _tool("setpriv"), _tool("mount"))
    site_dirs = _site_dirs()
    python_dirs = _outermost([*_interpreter_dirs(), *site_dirs])
    return _Host(bwrap, stage, sys.executable, python_dirs, site_dirs, _system_dirs())


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        package = _PACKAGE_OF[name]
        raise SandboxError(
            f"`{name}` was not found on PATH: the sandbox needs it to run candidates' tests; "
            f"install the Debian package {package!r} (apt-get install -y {package})"
        )
    return path


def _interpreter_dirs() -> set[str]:
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return dirs | _link_dirs(sys.executable)


def _site_dirs() -> tuple[str, ...]:
    """The directories pytest and its dependencies are imported from here, in order."""
    dirs: dict[str, None] = {}
    for name in _RUNNER_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            if name == "pytest":
                raise SandboxError(
                    "pytest is not installed in Genesis's environment, and the sandbox runs "
                    "candidates' tests with it: pip install pytest"
                )
            continue
        package_dir = os.path.dirname(spec.origin)
        site = os.path.dirname(package_dir) if spec.submodule_search_locations else package_dir
        dirs[site] = None
    return tuple(dirs)


def _link_dirs(path: str) -> set[str]:
    """The directory of every hop of a symlink chain (a venv's python points elsewhere)."""
    dirs = {os.path.dirname(path)}
    for _ in range(40):  # the kernel's own limit on nested links
        if not os.path.islink(path):
            break
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
        dirs.add(os.path.dirname(path))
    return dirs


def _outermost(dirs: Iterable[str]) -> tuple[str, ...]:
    """Drop directories inside another one (or inside /usr, which is bound anyway)."""
    kept: list[str] = []
    for path in sorted({os.path.abspath(d) for d in dirs}, key=len):
        if path != "/" and not any(_within(path, k) for k in ["/usr", *kept]):
            kept.append(path)
    return tuple(kept)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _system_dirs() -> tuple[tuple[str, str | None], ...]:
    found: list[tuple[str, str | None]] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            found.append((path, os.readlink(path)))
        elif os.path.isdir(path):
            found.append((path, None))
    return tuple(found)


# -- the command line ------------------------------------------------------------------------


class _Fds:
    """The file descriptors of one run, each closed exactly once (a number closed twice may
    by then belong to another thread's file)."""

    def __init__(self) -> None:
        self._open: set[int] = set()

    def add(self, fd: int) -> int:
        self._open.add(fd)
        return fd

    def release(self, fd: int) -> int:
        """Hand ``fd`` over to a new owner that will close it."""
        self._open.remove(fd)
        return fd

    def close(self, fd: int) -> None:
        if fd in self._open:
            self._open.remove(fd)
            os.close(fd)

    def close_all(self) -> None:
        for fd in list(self._open):
            self.close(fd)


@dataclass(slots=True)
class _Launch:
    """One run's command, the fds its child inherits, and the read ends the parent keeps."""

    command: list[str]
    key: bytes
    fds: _Fds
    report: int
    status: int
    output: int = -1  # read end of the child's stdout and stderr
    output_w: int = -1  # its write end: the child's stdout (closed here once it runs)
    child_fds: list[int] = field(default_factory=list)


def _prepare(
    host: _Host, files: dict[str, str], test_file: str, stack: contextlib.ExitStack
) -> _Launch:
    """Pipes, in-memory files and (as root) staging folders for one run; ``stack`` frees them."""
    fds = _Fds()
    stack.callback(fds.close_all)
    key = secrets.token_bytes(_KEY_BYTES)
    report_r, report_w = map(fds.add, os.pipe())
    status_r, status_w = map(fds.add, os.pipe())
    key_r, key_w = map(fds.add, os.pipe())
    os.write(key_w, key)  # 32 bytes: far below the pipe's buffer, so this never blocks
    fds.close(key_w)
    file_fds = {name: _memfd(fds, name, text.encode()) for name, text in files.items()}
    runner_fd = _memfd(fds, "runner", _RUNNER_SOURCE.read_bytes())
    binds, staging = _binds(host, stack)
    bwrap = _bwrap_args(host, binds, status_w, file_fds, runner_fd)
    runner = [host.python, "-I", "-B", _RUNNER, str(report_w), str(key_r), test_file]
    runner += host.site_dirs
    command = _staged(host, staging, [*bwrap, "--", *runner])
    output_r, output_w = map(fds.add, os.pipe())
    launch = _Launch(command, key, fds, report_r, status_r, output_r, output_w)
    launch.child_fds = [report_w, status_w, key_r, runner_fd, *file_fds.values()]
    return launch


def _memfd(fds: _Fds, name: str, data: bytes) -> int:
    fd = fds.add(os.memfd_create(name))
    with open(fd, "wb", closefd=False) as file:
        file.write(data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _binds(
    host: _Host, stack: contextlib.ExitStack
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(source, path inside) of each Python directory, and (host path, stage) to mount first."""
    if host.stage is None:
        return [(d, d) for d in host.python_dirs], []
    root = tempfile.mkdtemp(prefix="genesis-sandbox-")
    stack.callback(shutil.rmtree, root, True)
    os.chmod(root, 0o711)  # nobody may pass through, not list
    staging = []
    for i, path in enumerate(host.python_dirs):
        stage = os.path.join(root, str(i))
        os.mkdir(stage, 0o755)
        staging.append((path, stage))
    return [(stage, path) for path, stage in staging], staging


def _bwrap_args(
    host: _Host, binds: list[tuple[str, str]], status: int, files: dict[str, int], runner: int
) -> list[str]:
    args = [host.bwrap, "--unshare-all", "--unshare-user", "--disable-userns"]
    args += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    args += ["--json-status-fd", str(status)]
    args += ["--size", str(_WORK_BYTES), "--tmpfs", _WORK]
    args += ["--size", str(_SCRATCH_BYTES), "--tmpfs", "/tmp", "--ro-bind", "/usr", "/usr"]
    for path, target in host.system:
        args += ["--symlink", target, path] if target else ["--ro-bind", path, path]
    for source, inside in binds:
        args += ["--ro-bind", source, inside]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", str(_SCRATCH_BYTES), "--tmpfs", "/dev/shm"]
    for name, fd in files.items():
        args += ["--file", str(fd), f"{_WORK}/{name}"]
    args += ["--ro-bind-data", str(runner), _RUNNER]
    # Last, so that only the sized tmpfs mounts stay writable (bubblewrap's root is a tmpfs).
    return [*args, "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", _WORK]


def _staged(host: _Host, staging: list[tuple[str, str]], command: list[str]) -> list[str]:
    """As root: stage the binds in a private mount namespace, then become nobody."""
    if host.stage is None:
        return command
    unshare, setpriv, mount = host.stage
    pairs = [path for pair in staging for path in pair]
    drop = [f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups"]
    drop += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    return [
        *(unshare, "--mount", "--propagation", "private", "--"),
        *("/bin/sh", "-c", _STAGE_SCRIPT, "sh", mount, *pairs, "--"),
        *(setpriv, *drop, "--", *command),
    ]


def _environment() -> dict[str, str]:
    """A fresh environment: nothing of the caller's (secrets included) is passed on."""
    return {
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.defpath]),
        "HOME": _WORK,
        "TMPDIR": "/tmp",
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


# -- one run -----------------------------------------------------------------------------------


async def _run(launch: _Launch, limits: SandboxLimits) -> SandboxResult:
    started = time.perf_counter()
    proc = await _spawn(launch, limits)
    for fd in (*launch.child_fds, launch.output_w):  # only the sandbox may hold these now
        launch.fds.close(fd)
    tail, tally, status = _Tail(limits.max_output_bytes), ReportTally(launch.key), bytearray()
    try:
        # Every pipe is read through _Readers, which closes its transport on the way out
        # (asyncio's own stdout pipe was left open when a run timed out).
        async with _Readers() as readers:
            readers.start(tail.consume(await readers.pipe(launch.fds.release(launch.output))))
            for fd, sink in ((launch.report, tally.feed), (launch.status, status.extend)):
                readers.start(_consume(await readers.pipe(launch.fds.release(fd)), sink))
            timed_out = await _wait(proc, limits.timeout_s)
            await readers.drain()
    finally:
        _kill_group(proc.pid)  # also when cancelled before the wait: no run is left behind
    if not timed_out and b'"child-pid"' not in status:
        raise SandboxError(
            f"the sandbox did not start (exit code {proc.returncode}; bubblewrap needs user "
            f"namespaces, and version 0.8 or later): {tail.text()[-600:]}"
        )
    duration = time.perf_counter() - started
    return _result(proc.returncode, tally.counts(), timed_out, duration, tail.text())


async def _spawn(launch: _Launch, limits: SandboxLimits) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            *launch.command,
            env=_environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=launch.output_w,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            pass_fds=launch.child_fds,
            preexec_fn=_limiter(limits),
        )
    # SubprocessError: preexec_fn (setting the limits) failed in the child.
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxError(f"could not start the sandboxed test runner: {exc}") from exc


class _Readers:
    """Tasks reading the sandbox's pipes; their transports are closed on exit."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        self._transports: list[asyncio.BaseTransport] = []

    async def __aenter__(self) -> _Readers:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._tasks:
            task.cancel()
        for transport in self._transports:
            transport.close()

    async def pipe(self, fd: int) -> asyncio.StreamReader:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0)
        )
        self._transports.append(transport)
        return reader

    def start(self, work: Awaitable[None]) -> None:
        self._tasks.append(asyncio.ensure_future(work))

    async def drain(self) -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*self._tasks), _DRAIN_GRACE_S)
        except TimeoutError:
            logger.warning("sandbox pipes still open %.1fs after the run; dropped", _DRAIN_GRACE_S)


async def _consume(stream: asyncio.StreamReader, sink: Callable[[bytes], object]) -> None:
    while chunk := await stream.read(_READ_CHUNK):
        sink(chunk)


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


def _result(
    code: int | None, counts: Counts, timed_out: bool, duration: float, output: str
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
        tampering=counts.tampering,
    )


def _killed_reason(code: int | None, counts: Counts, timed_out: bool, output: str) -> str | None:
    if timed_out:
        return "timeout"
    if counts.memory_error or (not counts.finished and "MemoryError" in output):
        return "memory"
    signum = _signal_of(code)
    if signum is not None:
        return "cpu" if signum == signal.SIGXCPU else f"signal {signum}"
    if not counts.finished:
        return f"exited early (exit code {code})"
    return None


def _signal_of(code: int | None) -> int | None:
    if code is None:
        return None
    if code < 0:
        return -code
    # bubblewrap reports a child killed by signal N as exit status 128 + N.
    return code - 128 if 128 < code <= 128 + signal.NSIG else None
