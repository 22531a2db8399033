"""``genesis rollout ...`` and ``genesis report``: read settings, open the database; never
load the embedding model (a rollout command is a few database reads and writes)."""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from genesis.events import EventStore
    from genesis.rollout import Rollout, RolloutState

T = TypeVar("T")

rollout_app = typer.Typer(
    help="Staged rollout of an agent's fine-tuned model (stages, gates, evidence).",
    no_args_is_help=True,
)
Agent = Annotated[str, typer.Argument(help="Agent name")]
Why = Annotated[str | None, typer.Option("--why", help="Recorded with the change")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts")]


@contextmanager
def _rollout() -> Iterator[Rollout]:
    from genesis.cli import _state
    from genesis.config import load_settings
    from genesis.rollout import Rollout, SqlRolloutStore
    from genesis.store import open_database

    # Settings only: Genesis itself (embedding model, indexes) is not needed here.
    settings = load_settings(
        _state.get("env"), _state.get("config_dir"), overrides=_state.get("overrides")
    )
    db = open_database(settings)
    events = _event_store(db)
    try:
        yield Rollout(settings.rollout, settings.agents, SqlRolloutStore(db), events)
    finally:
        events.close()
        db.close()


def _event_store(db: Any) -> EventStore:
    """The request events the statistics read, on the same database."""
    from genesis.events import SqlEventStore

    return SqlEventStore(db, owns_database=False)


def _do(work: Callable[[Rollout], T]) -> T:
    from genesis.cli import _fail
    from genesis.errors import GenesisError

    try:
        with _rollout() as rollout:
            return work(rollout)
    except (GenesisError, ValueError, OSError) as exc:
        _fail(exc)


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _print(payload: Any, as_json: bool) -> None:
    from genesis.cli import out

    if as_json:
        out.print_json(json.dumps(payload, default=str))
    else:
        out.print(json.dumps(payload, indent=2, default=str), markup=False, highlight=False)


def _changed(state: RolloutState, as_json: bool) -> None:
    from dataclasses import asdict

    _print(asdict(state), as_json)


@rollout_app.command("status")
def status(agent: Agent, as_json: JsonOpt = False) -> None:
    """Percentage, stage, the gates' verdict with its evidence, and recent changes."""
    result = _do(lambda r: r.status(agent))
    if as_json:
        _print(result, True)
        return
    from genesis.cli import out

    state = result["state"] or {}
    out.print(
        f"{agent}: {result['percent']:g}% fine-tuned, stage {state.get('stage', '-')} of "
        f"{result['stages']}, {state.get('status', 'not started')}; verdict "
        f"[bold]{result['verdict']['verdict']}[/]"
    )
    for reason in result["verdict"]["reasons"]:
        out.print(f"  - {reason}", markup=False, highlight=False)


@rollout_app.command("start")
def start(agent: Agent, why: Why = None, as_json: JsonOpt = False) -> None:
    """Begin at the first stage (or resume a paused rollout)."""
    _changed(_do(lambda r: r.start(agent, _who(), why or "started by hand")), as_json)


@rollout_app.command("advance")
def advance(agent: Agent, why: Why = None, as_json: JsonOpt = False) -> None:
    """Move to the next stage now (the gates' current verdict is recorded as evidence)."""

    def work(r: Rollout) -> RolloutState:
        verdict = r.evaluate(agent)
        return r.advance(agent, _who(), why or "advanced by hand", verdict)

    _changed(_do(work), as_json)


@rollout_app.command("rollback")
def rollback(agent: Agent, why: Why = None, as_json: JsonOpt = False) -> None:
    """Everyone back on the baseline model."""

    def work(r: Rollout) -> RolloutState:
        verdict = r.evaluate(agent)
        return r.rollback(agent, _who(), why or "rolled back by hand", verdict)

    _changed(_do(work), as_json)


@rollout_app.command("pause")
def pause(agent: Agent, why: Why = None, as_json: JsonOpt = False) -> None:
    """Hold the current percentage; the automatic mode leaves it alone until `start`."""
    _changed(_do(lambda r: r.pause(agent, _who(), why or "paused by hand")), as_json)


@rollout_app.command("set")
def set_percent(
    agent: Agent,
    percent: Annotated[float, typer.Argument(help="0..100, of units on the fine-tuned model")],
    why: Why = None,
    as_json: JsonOpt = False,
) -> None:
    """Set the percentage by hand (every replica follows within rollout.cache_ttl_s)."""
    _changed(_do(lambda r: r.set(agent, percent, _who(), why or "set by hand")), as_json)


@rollout_app.command("assign")
def assign(
    agent: Agent,
    units: Annotated[list[str] | None, typer.Argument(help="Unit (user) ids")] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="One unit id per line")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Which variant each unit gets now: a JSON list of {unit, experiment, variant, bucket}."""
    ids = list(units or [])
    if from_file is not None:
        text = from_file.read_text(encoding="utf-8")
        ids += [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise typer.BadParameter("give unit ids as arguments or with --from-file")
    found = _do(lambda r: r.assign_units(agent, ids))
    rows = [
        {"unit": a.unit.id, "experiment": a.experiment, "variant": a.variant, "bucket": a.bucket}
        for a in found
    ]
    _print(rows, True) if as_json else _print_rows(rows)


def _print_rows(rows: list[dict[str, Any]]) -> None:
    from genesis.cli import out

    for row in rows:
        out.print(f"{row['unit']}\t{row['variant']}\t{row['bucket']}", markup=False)


@rollout_app.command("auto")
def auto(
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit")] = False,
    interval: Annotated[
        float | None, typer.Option("--interval", help="Seconds between passes")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The automatic mode: advance on evidence, roll back on a regression or guardrail.

    One process at a time acts (a lock in the database)."""

    def work(r: Rollout) -> None:
        every = interval or r.settings.auto_interval_s
        while True:
            _print({"ts": time.time(), "verdicts": r.tick_locked("auto:cli")}, as_json)
            if once:
                return
            time.sleep(every)

    _do(work)


def report(
    agent: Agent,
    html_path: Annotated[Path | None, typer.Option("--html", help="Write the HTML page")] = None,
    md_path: Annotated[Path | None, typer.Option("--md", help="Write Markdown")] = None,
) -> None:
    """The rollout report: variants over time with confidence bands, stage, verdict and
    evidence, sample-ratio check, history of changes (HTML opens offline)."""
    from genesis.rollout._report import render_html, render_markdown, report_data

    data = _do(lambda r: report_data(r, agent))
    markdown = render_markdown(data)
    if html_path is not None:
        html_path.write_text(render_html(data), encoding="utf-8")
    if md_path is not None:
        md_path.write_text(markdown, encoding="utf-8")
    if html_path is None and md_path is None:
        from genesis.cli import out

        out.print(markdown, markup=False, highlight=False)
