"""`genesis rollout ...` and `genesis report` as a user runs them, on a fresh home with the
default configuration; the whole lifecycle with evidence in the changes table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from genesis.config import load_settings
from genesis.rollout import Assigner, Rollout, SqlRolloutStore, threshold
from genesis.store import open_database
from genesis.testing.rollout_sim import MemoryEventStore, Truth, simulate_events

EXPERIMENT = "support:ft:open-mistral-7b:genesis:support-v3"


def _genesis(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS")}
    return subprocess.run(
        [sys.executable, "-m", "genesis", "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_set_and_assign_on_a_fresh_home(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    done = _genesis(home, "rollout", "set", "support", "25", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["percent"] == 25.0
    ids = tmp_path / "ids.txt"
    ids.write_text("dave\n\nerin\n", encoding="utf-8")
    done = _genesis(
        home, "rollout", "assign", "support", "alice", "bob", "--from-file", str(ids), "--json"
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["unit"] for r in rows] == ["alice", "bob", "dave", "erin"]
    # Anyone can check: the same HMAC with the default secret gives the same buckets.
    assigner = Assigner(b"genesis-rollout-default-secret")
    for row in rows:
        assert set(row) == {"unit", "experiment", "variant", "bucket"}
        assert row["experiment"] == EXPERIMENT
        assert row["bucket"] == assigner.bucket(EXPERIMENT, row["unit"])
        expected = "finetuned" if row["bucket"] < threshold(25) else "baseline"
        assert row["variant"] == expected
    status = json.loads(_genesis(home, "rollout", "status", "support", "--json").stdout)
    assert status["percent"] == 25.0 and status["changes"][0]["action"] == "set"
    assert _genesis(home, "rollout", "set", "support", "120").returncode == 2


def test_commands_walk_the_stages_and_record_who_and_why(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert _genesis(home, "rollout", "start", "support", "--why", "ticket 42").returncode == 0
    assert _genesis(home, "rollout", "advance", "support").returncode == 0
    assert _genesis(home, "rollout", "pause", "support").returncode == 0
    assert _genesis(home, "rollout", "start", "support").returncode == 0  # resumes
    assert _genesis(home, "rollout", "rollback", "support", "--why", "complaints").returncode == 0
    failed = _genesis(home, "rollout", "advance", "nobody")
    assert failed.returncode == 2 and "unknown agent" in failed.stderr
    status = json.loads(_genesis(home, "rollout", "status", "support", "--json").stdout)
    actions = [(c["action"], c["to_percent"], c["why"]) for c in reversed(status["changes"])]
    assert actions == [
        ("start", 10.0, "ticket 42"),
        ("advance", 25.0, "advanced by hand"),
        ("pause", 25.0, "paused by hand"),
        ("resume", 25.0, "started by hand"),
        ("rollback", 0.0, "complaints"),
    ]
    assert all(c["who"].startswith("cli") for c in status["changes"])
    assert status["changes"][0]["evidence"]["verdict"] == "wait"  # what the gates said then


def test_auto_mode_advances_to_100_on_good_evidence_and_holds_a_lock(tmp_path: Path) -> None:
    clock = [1_000.0]
    settings = load_settings("dev", environ={}, overrides={"home": str(tmp_path)})
    events = MemoryEventStore()
    store = SqlRolloutStore(open_database(settings), clock=lambda: clock[0])
    rollout = Rollout(settings.rollout, settings.agents, store, events, clock=lambda: clock[0])
    other = Rollout(settings.rollout, settings.agents, store, events, clock=lambda: clock[0])
    other.holder = "another-replica"
    rollout.start("support", "test")
    seen = []
    for stage in range(4):
        state = rollout.state("support")
        assert state is not None
        seen.append((state.percent, state.status))
        if state.status == "complete":
            break
        events.write(
            simulate_events(
                rollout._assigner,
                agent="support",
                experiment=state.experiment,
                percent=state.percent,
                requests=8_000 if state.percent < 25 else 6_000,
                start_ts=clock[0] + 5,
                finetuned=Truth(success=0.92),
                baseline=Truth(success=0.85),
                seed=stage,
                duration_s=3_000,
            )
        )
        clock[0] += 3_600
        assert rollout.tick_locked() == {"support": "advance"}
        assert other.tick_locked() is None  # the lock: one replica acts at a time
    assert seen == [(10.0, "running"), (25.0, "running"), (50.0, "running"), (100.0, "complete")]
    advances = [c for c in store.changes("support") if c.action == "advance"]
    assert len(advances) == 3 and all(c.who == "auto" for c in advances)
    assert all(c.evidence["checks"]["success_shown"] for c in advances)


def test_guardrail_rolls_back_at_once(tmp_path: Path) -> None:
    clock = [1_000.0]
    settings = load_settings("dev", environ={}, overrides={"home": str(tmp_path)})
    events = MemoryEventStore()
    store = SqlRolloutStore(open_database(settings), clock=lambda: clock[0])
    rollout = Rollout(settings.rollout, settings.agents, store, events, clock=lambda: clock[0])
    state = rollout.start("support", "test")
    events.write(
        simulate_events(
            rollout._assigner,
            agent="support",
            experiment=state.experiment,
            percent=10,
            requests=1_000,
            start_ts=1_005.0,
            finetuned=Truth(error=0.3),
            baseline=Truth(),
            duration_s=60,
        )
    )
    clock[0] += 120  # far below the stage's minimum time: a guardrail does not wait
    assert rollout.tick() == {"support": "rollback"}
    after = rollout.state("support")
    assert after is not None and after.percent == 0 and after.status == "rolled_back"
    assert "guardrail" in store.changes("support")[0].why
