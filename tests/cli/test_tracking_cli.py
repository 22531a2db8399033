"""`genesis cost` and `genesis profile`, run as a user runs them (a real subprocess)."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from genesis.events import open_event_store
from genesis.testing.event_store_contract import T0, event
from genesis.testing.server_process import genesis_cmd

STAGES = {"route", "embed", "retrieve", "token_cache", "assemble", "generate", "serialize"}


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS")}
    env["GENESIS_HOME"] = str(home)
    env["COLUMNS"] = "120"
    return subprocess.run(
        [*genesis_cmd(), *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture
def cost_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    store = open_event_store(f"sqlite:///{home / 'genesis.db'}")
    store.write(
        [
            event(ts=T0, agent="support", model="m1", session_id="s1", cost_usd=0.25),
            event(ts=T0 + 1, agent="support", model="m2", session_id="s2", cost_usd=0.5),
            event(ts=T0 + 2, agent="qa", model="m1", session_id="s1", cost_usd=0.125),
        ]
    )
    store.close()
    return home


def test_cost_json_groups_and_filters(cost_home: Path) -> None:
    result = run(cost_home, "cost", "--by", "agent", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {r["agent"]: r["cost_usd"] for r in report["rows"]} == {"qa": 0.125, "support": 0.75}
    assert report["total"]["requests"] == 3
    assert report["total"]["cost_usd"] == pytest.approx(0.875)
    session = json.loads(run(cost_home, "cost", "--session", "s1", "--json").stdout)
    assert session["total"]["cost_usd"] == pytest.approx(0.375)
    later = json.loads(run(cost_home, "cost", "--since", str(T0 + 1), "--json").stdout)
    assert later["total"]["requests"] == 2


def test_cost_table(cost_home: Path) -> None:
    result = run(cost_home, "cost", "--by", "agent,session")
    assert result.returncode == 0, result.stderr
    assert "$0.875000" in result.stdout and "s2" in result.stdout


def test_cost_refuses_an_unknown_group(cost_home: Path) -> None:
    result = run(cost_home, "cost", "--by", "colour")
    assert result.returncode == 2
    assert "choose among" in result.stderr


@pytest.mark.slow
def test_profile_json_stages_add_up_to_the_total(demo_home: Path) -> None:
    question = "My API key rotation broke our integration. How do I rotate an API key safely?"
    result = run(demo_home, "profile", question, "--runs", "5", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) >= {"stages", "total", "other_ms"}
    assert STAGES <= set(report["stages"])
    for stats in [*report["stages"].values(), report["total"]]:
        assert set(stats) == {"p50_ms", "p95_ms"}
        assert 0 <= stats["p50_ms"] <= stats["p95_ms"]
    medians = sum(s["p50_ms"] for s in report["stages"].values())
    assert math.isclose(medians + report["other_ms"], report["total"]["p50_ms"], rel_tol=0.05)
    assert report["runs"] == 5 and report["agent"] == "support"


@pytest.mark.slow
def test_profile_draws_a_waterfall(demo_home: Path) -> None:
    result = run(demo_home, "profile", "How do I rotate an API key?", "--runs", "2")
    assert result.returncode == 0, result.stderr
    for stage in (*STAGES, "other", "total"):
        assert stage in result.stdout
    assert "█" in result.stdout
