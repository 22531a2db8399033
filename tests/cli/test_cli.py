"""End to end through the `genesis` command, as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]


def _genesis_cmd() -> list[str]:
    exe = shutil.which("genesis", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "genesis"]


@pytest.fixture
def home(demo_home: Path) -> Path:
    """The session's pre-ingested home (the first-run path has its own test)."""
    return demo_home


def run(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS")}
    env["GENESIS_HOME"] = str(home)
    return subprocess.run(
        [*_genesis_cmd(), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or home,
        timeout=300,
    )


def test_main_job_on_a_fresh_home_from_any_directory(tmp_path: Path) -> None:
    fresh, elsewhere = tmp_path / "home", tmp_path / "somewhere"
    elsewhere.mkdir()
    done = run(fresh, "ask", "How do I rotate an API key?", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # The first line names the agent and why (the labelled routing tasks send how-to
    # questions about the API to documentation; its collection or support's answers).
    agent = out.splitlines()[0].split()[0]
    assert agent in {"support", "documentation"}, out.splitlines()[0]
    assert "rotate" in out.lower()
    assert "Sources" in out
    assert re.search(r"\[1\] (rotate-api-key|api-keys)\.md", out), out
    assert "prompt tokens" in out and "from cache" in out and " ms" in out


def test_ask_json_shows_the_second_run_served_from_cache(home: Path) -> None:
    first = run(home, "ask", "How long do refunds take?", "--json")
    second = run(home, "ask", "How long do refunds take?", "--json")
    assert first.returncode == 0, first.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["agent"] == "support"
    answer = b["answer"]
    assert answer["extractive"] is True
    assert answer["sources"] and all("source" in s and "heading" in s for s in answer["sources"])
    usage = answer["usage"]
    # Chunks were tokenized at ingest and persisted: a new process takes them from the cache.
    assert usage["chunks_from_cache"] == usage["chunks_in_prompt"] > 0
    assert usage["cached_tokens"] <= usage["prompt_tokens"]
    assert answer["timings_ms"]["total"] > 0


def test_ask_with_an_explicit_agent(home: Path) -> None:
    done = run(home, "ask", "What does error 429 mean?", "--agent", "documentation", "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["agent"] == "documentation"
    assert payload["answer"]["collection"] == "documentation"


def test_search_json_lists_ranked_chunks(home: Path) -> None:
    done = run(home, "search", "webhook signature", "--collection", "support", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) == 5
    assert all({"source", "heading", "score", "text"} <= set(r) for r in rows)
    assert any("webhook" in r["source"] for r in rows[:3])


def test_route_json(home: Path) -> None:
    done = run(home, "route", "Please review this diff for bugs", "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert set(payload) == {"agent", "confidence", "reason"}
    assert payload["agent"] == "code_review"


def test_ingest_search_and_cache_commands(home: Path, tmp_path: Path) -> None:
    docs = tmp_path / "notes"
    docs.mkdir()
    (docs / "kites.md").write_text(
        "# Kites\n\n## Flying\n\nA delta kite flies best in steady wind of 10 to 25 km/h.\n"
    )
    done = run(home, "ingest", str(docs), "--collection", "kites", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["files_added"] == 1 and report["chunks_added"] >= 1
    again = json.loads(run(home, "ingest", str(docs), "--collection", "kites", "--json").stdout)
    assert again["files_unchanged"] == 1 and again["chunks_added"] == 0
    stats = json.loads(run(home, "cache", "stats", "--json").stdout)
    assert stats["store"] == "SqliteTokenStore"
    cleared = json.loads(run(home, "cache", "clear", "--collection", "kites", "--json").stdout)
    assert cleared == {"kites": 1}
    warmed = json.loads(run(home, "cache", "warm", "--collection", "kites", "--json").stdout)
    assert warmed == {"kites": 1}


def test_bad_input_gets_a_clear_error(home: Path, tmp_path: Path) -> None:
    missing = run(home, "ingest", str(tmp_path / "nope"), "--collection", "x")
    assert missing.returncode == 2
    assert "nope" in missing.stderr
    bad_agent = run(home, "ask", "hello", "--agent", "nobody")
    assert bad_agent.returncode == 2
    assert "unknown agent 'nobody'" in bad_agent.stderr and "support" in bad_agent.stderr
    bad_collection = run(home, "search", "x", "--collection", "Bad Name!")
    assert bad_collection.returncode == 2
    assert "Bad Name!" in bad_collection.stderr


def test_run_code_review_on_a_diff(home: Path, tmp_path: Path) -> None:
    diff = tmp_path / "change.diff"
    diff.write_text(
        "diff --git a/app/db.py b/app/db.py\n--- a/app/db.py\n+++ b/app/db.py\n"
        "@@ -1,2 +1,5 @@\n import sqlite3\n+def find(conn, name, seen=[]):\n"
        "+    return conn.execute(f\"SELECT * FROM users WHERE name = '{name}'\")\n"
    )
    done = run(home, "run", "code_review", str(diff), "--json")
    assert done.returncode == 0, done.stderr
    findings = json.loads(done.stdout)["findings"]
    rules = {(f["file"], f["line"], f["rule"]) for f in findings}
    assert ("app/db.py", 2, "mutable-default") in rules
    assert ("app/db.py", 3, "sql-injection") in rules


def test_run_with_an_option_the_task_does_not_take_exits_2_with_a_message(
    home: Path, tmp_path: Path
) -> None:
    source = tmp_path / "fib.py"
    source.write_text("def fib(n):\n    return n\n")
    done = run(home, "run", "se_darwin", str(source), "--filename", "x.py")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "takes no option 'filename'" in done.stderr
    assert "tests, generations, population" in done.stderr
    missing = run(home, "run", "se_darwin", str(source))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "option 'tests' is required" in missing.stderr


def test_a_repeated_question_is_answered_without_loading_the_model(home: Path) -> None:
    question = f"How do I rotate an API key? ({uuid.uuid4().hex[:8]})"  # new to this home
    first = run(home, "-v", "ask", question, "--json")
    second = run(home, "-v", "ask", question, "--json")
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    assert "loaded embedder" in first.stderr  # a new question is embedded
    # Asked again: its vector and its chunks' sentence vectors are read from the home.
    assert "loaded embedder" not in second.stderr
    a, b = json.loads(first.stdout)["answer"], json.loads(second.stdout)["answer"]
    assert (a["answer"], a["evidence"]) == (b["answer"], b["evidence"])
