"""The test runner that runs *inside* the sandbox: pytest plus a reporter on a pipe.

The sandbox copies this file into the sandbox read-only and runs it as a script,
``python -I -B runner.py REPORT_FD KEY_FD TEST_FILE [SITE_DIR...]``, before any candidate code
is imported. It imports only the standard library and pytest (from the site directories
where the parent found it, e.g. a user site that ``-I`` leaves out), never genesis.

It reads a one-off key from ``KEY_FD`` and closes it, then runs pytest on ``TEST_FILE`` with a
plugin that writes one line per event to ``REPORT_FD`` as it happens: ``<hmac> <json>``, where
the HMAC-SHA256 of the JSON is made with that key. The parent tallies the lines as they arrive,
so nothing written to a file, and nothing the candidate does after a test was reported, can
change that test's outcome; lines the candidate writes into the pipe without the key are
discarded. See :mod:`genesis.agents._sandbox` for what this does not protect against.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

# One record per line, each well under PIPE_BUF (4096 bytes), so one os.write is atomic and a
# candidate writing into the same pipe can never split a record: test ids are sent hashed.
_ID_HEX = 16


class Reporter:
    """A pytest plugin that reports collection, every test phase and the end of the session."""

    def __init__(self, fd: int, mac: hmac.HMAC) -> None:
        self._fd = fd
        self._mac = mac

    def emit(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"))
        tag = self._mac.copy()
        tag.update(line.encode())
        try:
            os.write(self._fd, f"{tag.hexdigest()} {line}\n".encode())
        except OSError:
            pass  # the pipe was closed under us; the parent sees an incomplete report

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.emit({"k": "collect_error", "memory": _memory_error(report)})

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            self.emit({"k": "item", "id": _test_id(item.nodeid)})

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.emit(
            {
                "k": "phase",
                "id": _test_id(report.nodeid),
                "when": report.when,
                "outcome": report.outcome,
                "s": report.duration,
                "memory": report.failed and _memory_error(report),
            }
        )

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.emit({"k": "end", "status": int(exitstatus)})


def _test_id(nodeid: str) -> str:
    return hashlib.sha256(nodeid.encode()).hexdigest()[:_ID_HEX]


def _memory_error(report: pytest.CollectReport | pytest.TestReport) -> bool:
    return "MemoryError" in report.longreprtext


def _read_key(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def main(argv: list[str]) -> int:
    report_fd, key_fd, test_file = int(argv[1]), int(argv[2]), argv[3]
    mac = hmac.new(_read_key(key_fd), digestmod="sha256")
    sys.path.extend(d for d in argv[4:] if d not in sys.path)
    import pytest  # only now that its directories are on the path

    args = ["-q", "-p", "no:cacheprovider", test_file]
    return int(pytest.main(args, plugins=[Reporter(report_fd, mac)]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
