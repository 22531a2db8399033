"""Events out of the store, as JSON lines or Parquet, and the time arguments of the CLI."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from genesis.events._model import EventStore, RequestEvent, UsageGroup

ExportFormat = Literal["jsonl", "parquet"]
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_FIELDS = fields(RequestEvent)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


# What users type (``--by``, ``?by=``) -> the store's grouping columns.
USAGE_GROUPS: dict[str, UsageGroup] = {
    "agent": "agent",
    "model": "model",
    "session": "session_id",
    "day": "day",
    "variant": "variant",
}


def parse_usage_groups(by: str) -> list[UsageGroup]:
    """``"agent,day"`` -> the store's columns; ValueError names the choices."""
    names = [g.strip() for g in by.split(",") if g.strip()]
    unknown = [g for g in names if g not in USAGE_GROUPS]
    if unknown:
        raise ValueError(f"by: cannot group by {unknown}; choose among {', '.join(USAGE_GROUPS)}")
    return [USAGE_GROUPS[g] for g in names]


def parse_time(text: str, now: float | None = None) -> float:
    """Unix seconds from ``24h`` / ``7d`` / ``30m`` (that long ago), an ISO date or date-time
    (UTC unless it names a zone), or Unix seconds. ValueError names what is accepted."""
    value = text.strip()
    match = _RELATIVE.match(value)
    if match:
        ago = float(match.group(1)) * _UNIT_S[match.group(2)]
        return (time.time() if now is None else now) - ago
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: use 30m, 24h, 7d, 2w, an ISO date "
            "(2026-11-30, 2026-11-30T12:00) or Unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def export_events(
    store: EventStore,
    path: Path,
    fmt: ExportFormat,
    *,
    since: float | None = None,
    agent: str | None = None,
) -> int:
    """Write the selected events to ``path``; returns how many."""
    events = store.events(agent=agent, since=since)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        _write_jsonl(events, path)
    elif fmt == "parquet":
        _write_parquet(events, path)
    else:
        raise ValueError(f"unknown export format {fmt!r}; use jsonl or parquet")
    return len(events)


def _write_jsonl(events: list[RequestEvent], path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for event in events:
            fh.write(json.dumps(asdict(event), ensure_ascii=False) + "\n")


def _write_parquet(events: list[RequestEvent], path: Path) -> None:
    import pyarrow as pa  # imported here: ~150 ms, only this command needs it
    import pyarrow.parquet as pq

    # Typed columns, so that an empty export still has them; strings may be null.
    kinds = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    schema = pa.schema(
        [(f.name, kinds.get(str(f.type).split("|")[0].strip(), pa.string())) for f in _FIELDS]
    )
    columns = {f.name: [getattr(e, f.name) for e in events] for f in _FIELDS}
    pq.write_table(pa.table(columns, schema=schema), path)
