"""The parent's side of the sandbox's report pipe: verify each record, tally the outcomes.

:mod:`genesis.agents._sandbox_runner` writes ``<hmac-sha256 hex> <json>`` lines. A line counts
only when its HMAC verifies with the run's key; a test counts as passed only when exactly one
record of each of its phases arrived, for a test id announced at collection, and they say so.
Anything else (lines without a valid HMAC, repeated or unknown records) is counted as
tampering, and a test with a repeated record is scored as an error whatever it claimed. Tests
that were collected but never finished (the run was killed or exited) are errors too, so
stopping the run early can only lower a score.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any

# Records are far shorter; a longer run of bytes without a newline is the candidate's.
_MAX_LINE = 8192
_RECORD = re.compile(rb"[0-9a-f]{64} \{")


@dataclass(frozen=True, slots=True)
class Counts:
    """What the verified records add up to (see :class:`genesis.agents.SandboxResult`)."""

    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    total: int = 0
    tests_time_s: float | None = None
    memory_error: bool = False
    finished: bool = False
    tampering: str | None = None


@dataclass(slots=True)
class _Test:
    phases: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    conflicted: bool = False


class ReportTally:
    """Feed it the pipe's bytes as they arrive; :meth:`counts` at the end."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._buffer = bytearray()
        self._tests: dict[str, _Test] = {}
        self._collect_errors = 0
        self._memory_error = False
        self._finished = False
        self._unauthenticated = 0
        self._conflicts = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data
        *lines, rest = self._buffer.split(b"\n")
        self._buffer = bytearray(rest[-_MAX_LINE:])
        if len(rest) > _MAX_LINE:
            self._unauthenticated += 1
        for line in lines:
            self._line(bytes(line))

    def counts(self) -> Counts:
        if self._buffer:  # a last line without its newline was never written by the runner
            self._unauthenticated += 1
            self._buffer.clear()
        verdicts = [_verdict(t) for t in self._tests.values()]
        errors = verdicts.count("error") + self._collect_errors
        return Counts(
            passed=verdicts.count("passed"),
            failed=verdicts.count("failed"),
            errors=errors,
            skipped=verdicts.count("skipped"),
            total=len(verdicts) + self._collect_errors,
            tests_time_s=sum(t.seconds for t in self._tests.values()) if self._tests else None,
            memory_error=self._memory_error,
            finished=self._finished,
            tampering=self._tampering(),
        )

    def _line(self, line: bytes) -> None:
        starts = [m.start() for m in _RECORD.finditer(line)]
        # The runner writes whole lines atomically, so its record is at the end of any line
        # the candidate prefixed with bytes of its own.
        record = self._verify(line[starts[-1] :]) if starts else None
        if record is None or starts[-1] > 0:
            self._unauthenticated += 1
        if record is not None:
            self._apply(record)

    def _verify(self, line: bytes) -> dict[str, Any] | None:
        tag, _, payload = line.partition(b" ")
        expected = hmac.new(self._key, payload, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(tag, expected):
            return None
        try:
            record = json.loads(payload)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def _apply(self, record: dict[str, Any]) -> None:
        kind = record.get("k")
        if self._finished:
            self._conflicts += 1  # nothing genuine follows the end of the session
        elif kind == "item":
            self._item(str(record.get("id")))
        elif kind == "phase":
            self._phase(record)
        elif kind == "collect_error":
            self._collect_errors += 1
            self._memory_error |= record.get("memory") is True
        elif kind == "end":
            self._finished = True

    def _item(self, test_id: str) -> None:
        if test_id in self._tests:
            self._conflicts += 1
            self._tests[test_id].conflicted = True
        else:
            self._tests[test_id] = _Test()

    def _phase(self, record: dict[str, Any]) -> None:
        test = self._tests.get(str(record.get("id")))
        when, outcome = str(record.get("when")), str(record.get("outcome"))
        if test is None or when in test.phases:
            self._conflicts += 1
            if test is not None:
                test.conflicted = True
            return
        test.phases[when] = outcome
        seconds = record.get("s")
        test.seconds += float(seconds) if isinstance(seconds, int | float) else 0.0
        self._memory_error |= record.get("memory") is True

    def _tampering(self) -> str | None:
        problems = []
        if self._unauthenticated:
            problems.append(f"{self._unauthenticated} report line(s) failed authentication")
        if self._conflicts:
            problems.append(f"{self._conflicts} report record(s) repeated or out of place")
        return "; ".join(problems) or None


def _verdict(test: _Test) -> str:
    """One outcome per test, as JUnit counts them; unfinished or conflicted is an error."""
    phases = test.phases
    if test.conflicted or "failed" in (phases.get("setup"), phases.get("teardown")):
        return "error"
    if phases.get("call") == "failed":
        return "failed"
    if "setup" not in phases or "teardown" not in phases:
        return "error"  # never finished, or a record of it was lost
    if "skipped" in (phases["setup"], phases.get("call")):
        return "skipped"
    return "passed" if phases["setup"] == phases.get("call") == "passed" else "error"
