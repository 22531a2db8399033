"""The tracking commands of the ``genesis`` CLI: ``events export``, ``cost`` and ``profile``.

Registered on the main app at the end of :mod:`genesis.cli`; the helpers of that module
(``_open``, ``_fail``, the consoles) are imported when a command runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from genesis.errors import GenesisError

if TYPE_CHECKING:
    from rich.table import Table

    from genesis._profile import ProfileReport
    from genesis.events import SqlEventStore, UsageRow

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


def cost(
    agent: AgentOpt = None,
    session: Annotated[str | None, typer.Option("--session", help="Only this session")] = None,
    since: SinceOpt = None,
    until: Annotated[str | None, typer.Option("--until", help="Same forms as --since")] = None,
    by: Annotated[
        str, typer.Option("--by", help="Comma list of agent, model, session, day, variant")
    ] = "agent,model",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Tokens and cost of the recorded requests, grouped (SUM ... GROUP BY in the store)."""
    from genesis.cli import _dump, _fail, out
    from genesis.events import parse_time, parse_usage_groups

    try:
        groups = parse_usage_groups(by)
        window = {"since": _since(since), "until": None if until is None else parse_time(until)}
        store = _store()
        try:
            filters: dict[str, Any] = {"agent": agent, "session_id": session, **window}
            rows = store.usage(by=groups, **filters)
            totals = store.usage(**filters)
        finally:
            store.close()
    except (GenesisError, ValueError) as exc:
        _fail(exc)
    report = _cost_report(by, rows, totals)
    if as_json:
        out.print(_dump(report), markup=False, highlight=False, soft_wrap=True)
    else:
        out.print(_cost_table(report))


def _cost_report(by: str, rows: list[UsageRow], totals: list[UsageRow]) -> dict[str, Any]:
    def plain(row: UsageRow) -> dict[str, Any]:
        named = {("session" if k == "session_id" else k): v for k, v in row.group.items()}
        numbers = {k: getattr(row, k) for k in _NUMBERS}
        return {**named, **numbers}

    empty = dict.fromkeys(_NUMBERS, 0)
    return {
        "by": [g.strip() for g in by.split(",") if g.strip()],
        "rows": [plain(r) for r in rows],
        "total": plain(totals[0]) if totals else {**empty, "cost_usd": 0.0},
    }


_NUMBERS = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "cost_usd")


def _cost_table(report: dict[str, Any]) -> Table:
    from rich.table import Table

    table = Table(title="Usage and cost", show_footer=True)
    groups = report["by"]
    total = report["total"]
    for i, name in enumerate(groups):
        table.add_column(name, footer="total" if i == 0 else "")
    for name in _NUMBERS:
        footer = _cell(name, total[name])
        table.add_column(name.replace("_", " "), justify="right", footer=footer)
    for row in report["rows"]:
        cells = [str(row.get(g)) if row.get(g) is not None else "-" for g in groups]
        table.add_row(*cells, *(_cell(n, row[n]) for n in _NUMBERS))
    return table


def _cell(name: str, value: float) -> str:
    return f"${value:,.6f}" if name == "cost_usd" else f"{int(value):,}"


def profile(
    question: Annotated[str, typer.Argument(help="The request to profile")],
    agent: AgentOpt = None,
    runs: Annotated[int, typer.Option("--runs", min=1, max=10_000, help="Timed runs")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs first")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts")] = False,
) -> None:
    """Run one request N times through the in-process pipeline and draw its waterfall
    (median and p95 per stage; "other" is the part of the median no stage explains)."""
    from genesis._profile import profile as run_profile
    from genesis.cli import _dump, _run, out

    if "OPENBLAS_NUM_THREADS" not in os.environ:
        # Before NumPy's BLAS loads: one thread per embedding is what the server runs with.
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
    report = _run(
        lambda genesis: run_profile(genesis, question, agent=agent, runs=runs, warmup=warmup)
    )
    if as_json:
        out.print(_dump(report.as_json()), markup=False, highlight=False, soft_wrap=True)
    else:
        out.print(_waterfall_table(report))


_BAR_WIDTH = 40


def _waterfall_table(report: ProfileReport) -> Table:
    """A bar per stage, each starting where the previous stage's median ended."""
    from rich.table import Table

    total = max(report.total.p50_ms, 1e-9)
    table = Table(
        title=f"{report.runs} runs of {report.question!r} (agent {report.agent})",
        caption=(
            "bars: medians; other = total median - sum of stage medians; per run, no stage "
            f"covered a median {report.unmeasured_p50_ms:.2f} ms"
        ),
    )
    table.add_column("stage")
    table.add_column("waterfall (median)", no_wrap=True)
    table.add_column("p50 ms", justify="right")
    table.add_column("p95 ms", justify="right")
    start = 0.0
    rows = [(n, s.p50_ms, f"{s.p95_ms:.2f}") for n, s in report.stages.items()]
    rows.append(("other", report.other_ms, ""))
    for name, p50, p95 in rows:
        table.add_row(name, _bar(start, p50, total), f"{p50:.2f}", p95)
        start += max(p50, 0.0)
    table.add_row(
        "total",
        _bar(0.0, total, total),
        f"{report.total.p50_ms:.2f}",
        f"{report.total.p95_ms:.2f}",
        style="bold",
    )
    return table


def _bar(start: float, length: float, total: float) -> str:
    left = round(start / total * _BAR_WIDTH)
    width = round(max(length, 0.0) / total * _BAR_WIDTH)
    if length > 0 and width == 0:
        return " " * min(left, _BAR_WIDTH - 1) + "▏"
    return " " * left + "█" * width
