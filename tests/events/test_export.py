"""`genesis events export` writes what the store holds, as JSON lines or Parquet."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from genesis.cli import app
from genesis.events import open_event_store, parse_time
from genesis.testing.event_store_contract import T0, event


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    store = open_event_store(f"sqlite:///{home / 'genesis.db'}")
    store.write(
        [
            event(ts=T0, agent="support", session_id="s1"),
            event(ts=T0 + 60, agent="qa", variant="finetuned"),
            event(ts=T0 + 120, agent="support", fallback=True, fallback_reason="timeout"),
        ]
    )
    store.close()
    return home


def _export(home: Path, *args: str) -> None:
    result = CliRunner().invoke(app, ["--home", str(home), "events", "export", *args])
    assert result.exit_code == 0, result.output


def test_jsonl_holds_every_event(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    _export(home, "--format", "jsonl", "--output", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    store = open_event_store(f"sqlite:///{home / 'genesis.db'}")
    assert rows == [asdict(e) for e in store.events()]
    store.close()


def test_parquet_with_filters(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.parquet"
    since = str(T0 + 30)
    _export(home, "--format", "parquet", "--agent", "support", "--since", since, "-o", str(out))
    table = pq.read_table(out)
    assert table.num_rows == 1
    row = table.to_pylist()[0]
    assert (row["agent"], row["fallback"], row["fallback_reason"]) == ("support", True, "timeout")
    assert row["session_id"] is None


def test_an_empty_parquet_export_keeps_its_columns(tmp_path: Path) -> None:
    out = tmp_path / "none.parquet"
    _export(tmp_path / "fresh-home", "--format", "parquet", "-o", str(out))
    assert "cost_usd" in pq.read_table(out).column_names


def test_unknown_format_is_refused(home: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["--home", str(home), "events", "export", "--format", "csv", "-o", str(tmp_path / "x")]
    )
    assert result.exit_code == 2


def test_time_arguments() -> None:
    assert parse_time("2026-11-30") == parse_time("2026-11-30T00:00:00+00:00")
    assert parse_time("1.5") == 1.5
    assert parse_time("2h", now=10_000.0) == 10_000.0 - 7200
    with pytest.raises(ValueError, match="24h"):
        parse_time("yesterday")
