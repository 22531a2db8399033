"""The sandboxed test runner: counts, limits, clean environment, and the boundary itself.

The boundary tests check from the host what a hostile candidate could not do (no file outside,
no process left, no connection accepted), not only what the candidate saw from inside.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import shutil
import socket
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from genesis.agents._sandbox import SandboxLimits, run_tests, run_tests_async
from genesis.agents._sandbox_report import ReportTally
from genesis.errors import SandboxError

REPO_ROOT = Path(__file__).resolve().parents[2]

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


# -- the boundary --------------------------------------------------------------------------


def test_a_missing_bubblewrap_is_an_error_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap (nor anything else) on it
    with pytest.raises(SandboxError, match=r"bwrap.*apt-get install -y bubblewrap"):
        run_tests("def add(a, b):\n    return a + b\n", ADD_TESTS, limits=FAST)


@pytest.fixture
def tools_dir() -> Iterator[Path]:
    """A folder for PATH that nobody may read too (the dropped user runs bubblewrap)."""
    path = Path(tempfile.mkdtemp(prefix="genesis-tools-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_a_sandbox_that_cannot_start_is_an_error_not_a_result(
    tools_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for tool in ("unshare", "setpriv", "mount"):  # the real ones, for the way in as root
        real = shutil.which(tool)
        assert real, f"{tool} is missing"
        (tools_dir / tool).symlink_to(real)
    # What bubblewrap does where user namespaces are off: a message and exit status 1.
    fake = tools_dir / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tools_dir))
    with pytest.raises(SandboxError, match="did not start.*No permissions to create new namespace"):
        run_tests("def add(a, b):\n    return a + b\n", ADD_TESTS, limits=FAST)


async def test_candidate_cannot_write_outside_its_folder(tmp_path: Path) -> None:
    name = f"genesis-escape-{uuid.uuid4().hex}"
    targets = [tmp_path, REPO_ROOT, Path("/tmp"), Path("/root"), Path("/etc"), Path("/usr/lib")]
    targets.append(Path("/"))  # the sandbox's root: a tmpfs of bubblewrap's, remounted read-only
    targets.append(Path(os.__file__).parent)  # the interpreter's own, read-only inside
    tests = textwrap.dedent(
        f"""
        import os

        def test_writes_only_inside():
            escaped = []
            for folder in {[str(t) for t in targets]!r}:
                try:
                    with open(os.path.join(folder, {name!r}), "w") as f:
                        f.write("escaped")
                    escaped.append(folder)
                except OSError:
                    pass
            # /tmp is the sandbox's own tmpfs: writable inside, invisible to the host (so is
            # a checkout under /tmp, whose folders bubblewrap recreates there for the venv).
            assert "/tmp" in escaped, escaped
            assert all(f == "/tmp" or f.startswith("/tmp/") for f in escaped), escaped
            with open({name!r}, "w") as f:  # its own folder is writable
                f.write("inside")
        """
    )
    result = await run_tests_async("x = 1\n", tests, limits=FAST)
    assert result.all_passed, result.output
    assert [t for t in targets if (t / name).exists()] == []


async def test_candidate_cannot_read_the_hosts_files(tmp_path: Path) -> None:
    # World-readable on purpose: only the sandbox's view of the filesystem keeps them out.
    planted = [tmp_path / "secret", Path("/tmp") / f"genesis-secret-{uuid.uuid4().hex}"]
    if os.geteuid() == 0:
        planted.append(Path("/root") / f"genesis-secret-{uuid.uuid4().hex}")
    paths = [str(p) for p in planted]
    paths += ["/etc/shadow", "/etc/hostname", "/etc/passwd", str(REPO_ROOT / "pyproject.toml")]
    tests = textwrap.dedent(
        f"""
        import os, socket, subprocess
        import pytest

        @pytest.mark.parametrize("path", {paths!r})
        def test_unreadable(path):
            with pytest.raises(OSError):
                open(path).read()

        def test_not_root_and_not_the_host():
            assert os.getuid() != 0 and os.getgid() != 0
            assert socket.gethostname() == "sandbox"
            assert os.getpid() < 10  # its own PID namespace: no host process in sight
            # No way back to a root of its own through a nested user namespace.
            assert subprocess.run(["unshare", "--user", "--map-root-user", "true"]).returncode
        """
    )
    try:
        for path in planted:
            path.write_text("the host's secret")
            path.chmod(0o644)
        result = await run_tests_async("x = 1\n", tests, limits=FAST)
    finally:
        for path in planted:
            path.unlink(missing_ok=True)
    assert result.all_passed and result.total == len(paths) + 1, result.output


@pytest.mark.slow
@pytest.mark.integration
async def test_candidate_runs_as_nobody_on_the_host() -> None:
    marker = f"genesis-sandbox-{uuid.uuid4().hex}"
    tests = textwrap.dedent(
        f"""
        import subprocess, sys, time

        def test_sleeps():
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", {marker!r}])
            time.sleep(2)  # long enough for the host to look at it
        """
    )
    run = asyncio.ensure_future(run_tests_async("x = 1\n", tests, limits=SandboxLimits(20.0)))
    uids: list[int] = []
    while not run.done() and not uids:
        uids = [_uid(pid) for pid in _processes_with(marker)]
        await asyncio.sleep(0.05)
    result = await run
    assert result.all_passed, result.output
    assert uids and all(uid == 65534 for uid in uids), uids


@pytest.mark.integration
async def test_candidate_cannot_open_a_socket(redis_client: aioredis.Redis) -> None:
    await redis_client.ping()  # reachable from the host, so a refusal inside means something
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    tests = textwrap.dedent(
        f"""
        import socket
        import pytest

        @pytest.mark.parametrize(
            "address", [("127.0.0.1", {port}), ("127.0.0.1", 6379), ("1.1.1.1", 53)]
        )
        def test_no_tcp(address):
            with pytest.raises(OSError):
                socket.create_connection(address, timeout=1)

        def test_no_udp():
            with pytest.raises(OSError):
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("1.1.1.1", 53))
        """
    )
    with listener:
        result = await run_tests_async("x = 1\n", tests, limits=FAST)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody knocked
    assert result.all_passed and result.total == 4, result.output


SPAWNS_A_DAEMON = textwrap.dedent(
    """
    import subprocess, sys, time

    def test_leaves_a_daemon():
        # Its own session and process group: out of reach of a process-group kill.
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)", "{marker}"],
            start_new_session=True,
        )
        time.sleep(0.2)
        assert child.poll() is None
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("hangs", [False, True], ids=["ends", "times-out"])
async def test_no_process_outlives_the_run(hangs: bool) -> None:
    marker = f"genesis-daemon-{uuid.uuid4().hex}"
    tests = SPAWNS_A_DAEMON.replace("{marker}", marker)
    if hangs:
        tests += "\n\ndef test_zz_hangs():\n    time.sleep(60)\n"
    # The run that ends gets time to spare (a loaded 2-core machine starts pytest slowly); the
    # one that hangs is stopped by the 2 s limit.
    limits = FAST if hangs else SandboxLimits(timeout_s=30.0, memory_mb=256)
    result = await run_tests_async("x = 1\n", tests, limits=limits)
    assert result.passed == 1, result.output  # the daemon was running
    assert result.timed_out is hangs
    assert _processes_with(marker) == []


@pytest.mark.slow
async def test_a_cancelled_run_leaves_no_process_behind() -> None:
    marker = f"genesis-cancelled-{uuid.uuid4().hex}"
    tests = SPAWNS_A_DAEMON.replace("{marker}", marker) + "    time.sleep(60)\n"
    run = asyncio.ensure_future(run_tests_async("x = 1\n", tests, limits=SandboxLimits(30.0)))
    while not _processes_with(marker):  # the daemon is up: the candidate is mid-test
        assert not run.done(), run.result().output
        await asyncio.sleep(0.05)
    run.cancel()  # e.g. the HTTP client went away
    with pytest.raises(asyncio.CancelledError):
        await run
    # The kill is sent before the cancellation returns; dying takes the kernel a moment.
    for _ in range(100):
        if not _processes_with(marker):
            break
        await asyncio.sleep(0.05)
    assert _processes_with(marker) == []


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return found


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


# -- the report cannot be forged -------------------------------------------------------------

FORGES_ITS_REPORT = textwrap.dedent(
    """
    import atexit, hashlib, os

    # The protocol is public: the ids are hashed node ids, the key is all it lacks.
    IDS = [
        hashlib.sha256(f"test_candidate.py::{name}".encode()).hexdigest()[:16].encode()
        for name in ("test_small", "test_negative")
    ]
    FAKE = b'%s {"k":"phase","id":"%s","when":"%s","outcome":"passed","s":0.0}\\n'

    def forge():
        for fd in range(3, 256):
            try:
                os.write(fd, b"junk without a newline")
                for test_id in IDS:
                    for when in (b"setup", b"call", b"teardown"):
                        os.write(fd, FAKE % (b"0" * 64, test_id, when))
            except OSError:
                pass

    forge()  # while pytest collects
    atexit.register(forge)  # and after it has finished

    def add(a, b):
        forge()  # and while the tests run, before their own records
        return a + abs(b)
    """
)


async def test_forged_report_lines_are_dropped_and_the_real_counts_kept() -> None:
    result = await run_tests_async(FORGES_ITS_REPORT, ADD_TESTS, limits=FAST)
    assert (result.passed, result.failed, result.total) == (1, 1, 2), result.output
    assert result.tampering and "failed authentication" in result.tampering
    assert result.killed_reason is None


@pytest.mark.parametrize(
    ("exit_call", "reason"),
    [("os._exit(0)", "exited early (exit code 0)"), ("os.kill(os.getpid(), 9)", "signal 9")],
)
async def test_ending_the_run_early_counts_the_unfinished_tests(
    exit_call: str, reason: str
) -> None:
    source = f"import os\n\ndef add(a, b):\n    if b < 0:\n        {exit_call}\n    return a + b\n"
    result = await run_tests_async(source, ADD_TESTS, limits=FAST)
    assert (result.passed, result.errors, result.total) == (1, 1, 2), result.output
    assert result.killed_reason == reason and result.pass_rate == 0.5


KEY = b"k" * 32


def record(payload: dict[str, object], key: bytes = KEY) -> bytes:
    line = json.dumps(payload, separators=(",", ":")).encode()
    return hmac.new(key, line, hashlib.sha256).hexdigest().encode() + b" " + line + b"\n"


def phases(test_id: str, call: str = "passed") -> bytes:
    return b"".join(
        record({"k": "phase", "id": test_id, "when": when, "outcome": outcome, "s": 0.5})
        for when, outcome in [("setup", "passed"), ("call", call), ("teardown", "passed")]
    )


def test_tally_trusts_only_signed_records_of_collected_tests() -> None:
    tally = ReportTally(KEY)
    stream = record({"k": "item", "id": "a"}) + record({"k": "item", "id": "b"})
    stream += b"garbage" + phases("a")  # a record behind the candidate's bytes still counts
    stream += phases("b", "passed").replace(b"passed", b"failed", 1)  # setup no longer signed
    stream += record({"k": "phase", "id": "b", "when": "call", "outcome": "passed"}, b"x" * 32)
    stream += phases("c")  # never collected
    stream += record({"k": "end", "status": 0})
    for i in range(0, len(stream), 7):  # arrives in arbitrary pieces
        tally.feed(stream[i : i + 7])
    counts = tally.counts()
    # b's signed call record passed, but its setup record was forged: never finished cleanly.
    assert (counts.passed, counts.errors, counts.total) == (1, 1, 2)
    assert counts.finished and counts.tests_time_s == pytest.approx(1.5 + 1.0)
    assert counts.tampering == (
        "3 report line(s) failed authentication; 3 report record(s) repeated or out of place"
    )


def test_tally_scores_a_repeated_record_as_an_error() -> None:
    tally = ReportTally(KEY)
    tally.feed(record({"k": "item", "id": "a"}) + phases("a", "failed") + phases("a"))
    tally.feed(record({"k": "end", "status": 1}) + record({"k": "item", "id": "z"}))
    counts = tally.counts()
    assert (counts.passed, counts.failed, counts.errors, counts.total) == (0, 0, 1, 1)
    assert counts.tampering == "4 report record(s) repeated or out of place"
