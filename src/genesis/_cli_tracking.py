"""The tracking commands of the ``genesis`` CLI: ``events export``, ``cost`` and ``profile``.

Registered on the main app at the end of :mod:`genesis.cli`; the helpers of that module
(``_open``, ``_fail``, the consoles) are imported when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from genesis.errors import GenesisError

if TYPE_CHECKING:
    from genesis.events import SqlEventStore

events_app = typer.Typer(
    help="Export the request events (tokens, cost, latency).", no_args_is_help=True
)

SinceOpt = Annotated[
    str | None, typer.Option("--since", help="24h, 7d, an ISO date/time (UTC) or Unix seconds")
]
AgentOpt = Annotated[str | None, typer.Option("--agent", help="Only this agent")]


def _store() -> SqlEventStore:
    """The configured event store, without warming Genesis up (no models are loaded)."""
    from genesis.cli import _open
    from genesis.events import open_event_store

    return open_event_store(_open().settings)


def _since(text: str | None) -> float | None:
    from genesis.events import parse_time

    return None if text is None else parse_time(text)


@events_app.command("export")
def events_export(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl | parquet")] = "jsonl",
    since: SinceOpt = None,
    agent: AgentOpt = None,
) -> None:
    """Write the stored request events as JSON lines or Parquet."""
    from genesis.cli import _fail, err
    from genesis.events import export_events

    if fmt not in ("jsonl", "parquet"):
        _fail(ValueError(f"--format must be jsonl or parquet, got {fmt!r}"))
    try:
        store = _store()
        try:
            count = export_events(store, output, fmt, since=_since(since), agent=agent)  # type: ignore[arg-type]
        finally:
            store.close()
    except (GenesisError, ValueError) as exc:
        _fail(exc)
    err.print(f"wrote {count} events to {output}")
