"""The ``genesis`` command line: ask, ingest, search, route, cache, serve."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from genesis._cli_rollout import report as rollout_report
from genesis._cli_rollout import rollout_app
from genesis.errors import GenesisError

if TYPE_CHECKING:  # the CLI imports these lazily: a warm `genesis ask` starts fast
    from genesis.agents import TaskResult
    from genesis.app import AskResult, Genesis
    from genesis.knowledge import IngestReport, ScoredChunk
    from genesis.router import RouteDecision

T = TypeVar("T")

app = typer.Typer(
    help="Genesis: token-cached RAG agents. Runs offline on embedded defaults.",
    no_args_is_help=True,
    add_completion=False,
)
cache_app = typer.Typer(help="Inspect, warm or clear the token cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
keys_app = typer.Typer(help="Make API keys and their digests for auth.keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(rollout_app, name="rollout")
app.command("report")(rollout_report)

out = Console()
err = Console(stderr=True)

_state: dict[str, Any] = {}

EnvOpt = Annotated[str | None, typer.Option("--env", help="dev | staging | production")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config-dir", help="Folder with {env}.yaml (default: packaged)")
]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="State folder (GENESIS_HOME)")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override one key: section.key=value")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts")]
CollectionOpt = Annotated[str | None, typer.Option("--collection", "-c", help="Collection name")]


@app.callback()
def main(
    env: EnvOpt = None,
    config_dir: ConfigOpt = None,
    home: HomeOpt = None,
    set_: SetOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Global options apply to every command."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr)
    overrides: dict[str, Any] = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--set expects section.key=value, got {item!r}")
        overrides[key.strip()] = value
    if home is not None:
        overrides["home"] = str(home)
    _state.update(env=env, config_dir=config_dir, overrides=overrides)


def _open() -> Genesis:
    from genesis.app import Genesis

    return Genesis.from_config(
        env=_state.get("env"),
        config_dir=_state.get("config_dir"),
        overrides=_state.get("overrides"),
    )


def _run(work: Callable[[Genesis], Awaitable[T]], *, preload: bool = True) -> T:
    """Open the app, run ``work(app)``, close it; GenesisError -> exit 2 with the message.
    ``preload=False``: models and indexes load when first used (`Genesis.warm_up`)."""

    async def go() -> T:
        genesis = _open()
        try:
            await genesis.warm_up(preload=preload)
            return await work(genesis)
        finally:
            await genesis.aclose()

    try:
        return asyncio.run(go())
    except GenesisError as exc:
        _fail(exc)
    except ValueError as exc:
        _fail(exc)


def _fail(exc: Exception) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(str(exc))}")
    raise typer.Exit(2) from None


@contextmanager
def _progress(description: str, quiet: bool) -> Iterator[Callable[[int, int, str], None]]:
    """A rich progress bar on stderr, fed by ``callback(done, total, current)``."""
    if quiet:
        yield lambda done, total, current: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}", style="dim"),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(description, total=None, current="")

        def update(done: int, total: int, current: str) -> None:
            bar.update(task, completed=done, total=total, current=current[-50:])

        yield update


def _dump(value: Any) -> str:
    return json.dumps(_plain(value), indent=2, ensure_ascii=False)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer")],
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Agent name")] = None,
    collection: CollectionOpt = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, max=50)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a question through an agent (ingests the demo knowledge base on first run)."""

    async def work(genesis: Genesis) -> AskResult:
        with _progress("Preparing demo knowledge base", as_json) as progress:
            await genesis.ensure_demo(progress=progress)
        # A question asked before needs no model: its vector (and the router's, which leaves
        # pasted code out: request_text) and its chunks' sentence vectors are stored under
        # the home.
        from genesis.router._request import request_text

        texts = list(dict.fromkeys([question, request_text(question)]))
        recalled = [await genesis.recall_query(text) for text in texts]
        result = await genesis.ask(question, agent=agent, collection=collection, top_k=top_k)
        for text, known in zip(texts, recalled, strict=True):
            if not known:
                await genesis.remember_query(text)
        return result

    # Nothing is preloaded: one question loads only what it needs.
    result = _run(work, preload=False)
    if as_json:
        out.print_json(_dump(result.as_dict()))
        return
    _print_answer(result)


def _print_answer(result: AskResult) -> None:
    answer = result.answer
    out.print(f"[bold]{result.agent}[/] [dim]({escape(result.route_reason)})[/]\n")
    out.print(answer.answer, highlight=False, markup=False)
    listed = answer.see_also if answer.abstained else answer.sources
    if listed:
        out.print("\n[bold]See also[/]" if answer.abstained else "\n[bold]Sources[/]")
        for src in listed:
            heading = f" — {src.heading}" if src.heading else ""
            out.print(f"  [{src.number}] {src.source}{heading}", highlight=False, markup=False)
    usage = answer.usage
    kind = "extractive (no LLM configured)" if answer.extractive else f"model {answer.model}"
    if answer.abstained:
        kind = "abstained: no model called"
    out.print(
        f"\n[dim]{usage.prompt_tokens} prompt tokens, {usage.cached_tokens} from cache "
        f"({usage.chunks_from_cache}/{usage.chunks_in_prompt} chunks); {kind}; "
        f"{answer.timings_ms['total']:.1f} ms[/]",
        highlight=False,
    )


@app.command("run")
def run_task(
    agent: Annotated[str, typer.Argument(help="Agent name (its profile says the task)")],
    input_file: Annotated[
        Path, typer.Argument(help="The task input: a brief, source code or a diff ('-' = stdin)")
    ],
    tests: Annotated[
        Path | None, typer.Option("--tests", help="Tests file (evolve: what to pass)")
    ] = None,
    filename: Annotated[
        str | None, typer.Option("--filename", help="review: name of a whole source file")
    ] = None,
    module_name: Annotated[
        str | None, typer.Option("--module-name", help="tests: module name to import")
    ] = None,
    generations: Annotated[
        int | None, typer.Option("--generations", help="evolve: generations to run")
    ] = None,
    population: Annotated[
        int | None, typer.Option("--population", help="evolve: variants per generation")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run an agent's task: plan (business_generation), tests (qa), review (code_review),
    evolve (se_darwin) or answer (support, documentation). An option the agent's task does
    not take is an error (exit 2)."""
    text = sys.stdin.read() if str(input_file) == "-" else _read_file(input_file)
    given = {
        "tests": _read_file(tests) if tests is not None else None,
        "filename": filename,
        "module_name": module_name,
        "generations": generations,
        "population": population,
    }
    options = {name: value for name, value in given.items() if value is not None}

    async def work(genesis: Genesis) -> TaskResult:
        runner = genesis.agent(agent)
        request = runner.request(text, **options)  # a wrong option fails before any work
        await genesis.ensure_demo(progress=None)
        return await runner.run(request)

    result = _run(work)
    payload = result.as_dict()
    if as_json:
        out.print_json(_dump(payload))
        return
    out.print(_dump(payload), highlight=False, markup=False)


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}") from None


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="Folder of Markdown, text and source files")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name")],
    as_json: JsonOpt = False,
) -> None:
    """Ingest a folder into a collection (unchanged files cost nothing)."""

    async def work(genesis: Genesis) -> IngestReport:
        with _progress(f"Ingesting into {collection}", as_json) as progress:
            return await genesis.ingest(path, collection, progress=progress)

    report = _run(work)
    if as_json:
        out.print_json(_dump(report))
        return
    out.print(_dump(report), highlight=False, markup=False)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name")],
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=100)] = 5,
    mode: Annotated[str, typer.Option("--mode", help="hybrid | dense | bm25")] = "hybrid",
    as_json: JsonOpt = False,
) -> None:
    """Show the ranked chunks retrieval finds, with source, heading and score."""
    if mode not in ("hybrid", "dense", "bm25"):
        raise typer.BadParameter(f"--mode must be hybrid, dense or bm25, not {mode!r}")

    async def work(genesis: Genesis) -> list[ScoredChunk]:
        await genesis.ensure_demo(progress=None)
        return await genesis.search(query, collection, top_k=top_k, mode=mode)

    hits = _run(work)
    rows = [
        {
            "rank": h.rank,
            "score": round(h.score, 6),
            "source": h.chunk.source,
            "heading": h.chunk.heading,
            "chunk_id": h.chunk.id,
            "scores": {k: round(v, 6) for k, v in h.scores.items()},
            "text": h.chunk.text,
        }
        for h in hits
    ]
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("rank", "score", "source", "heading")
    for h in hits:
        table.add_row(
            str(h.rank), f"{h.score:.4f}", escape(h.chunk.source), escape(h.chunk.heading)
        )
    out.print(table)


@app.command()
def route(
    text: Annotated[str, typer.Argument(help="A task, in words")],
    agent: Annotated[str | None, typer.Option("--agent", "-a")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show which agent the HALO router picks for a task, and why."""

    async def work(genesis: Genesis) -> RouteDecision:
        return await genesis.route_async(text, agent=agent)

    decision = _run(work)
    payload = {
        "agent": decision.agent,
        "confidence": round(decision.confidence, 4),
        "reason": decision.reason,
    }
    if as_json:
        out.print_json(json.dumps(payload))
        return
    out.print(
        f"{payload['agent']}  confidence {payload['confidence']}  ({payload['reason']})",
        markup=False,
    )


@cache_app.command("stats")
def cache_stats(as_json: JsonOpt = False) -> None:
    """Token cache statistics (entries, bytes, hits and misses by tier, breaker)."""

    async def work(genesis: Genesis) -> dict[str, Any]:
        return await genesis.cache_stats()

    stats = _run(work)
    out.print_json(_dump(stats)) if as_json else out.print(
        _dump(stats), highlight=False, markup=False
    )


@cache_app.command("warm")
def cache_warm(collection: CollectionOpt = None, as_json: JsonOpt = False) -> None:
    """Tokenize every chunk of a collection (or all) into the cache ahead of traffic."""

    async def work(genesis: Genesis) -> dict[str, int]:
        await genesis.ensure_demo(progress=None)
        return await genesis.cache_warm(collection)

    result = _run(work)
    out.print_json(_dump(result)) if as_json else out.print(
        _dump(result), highlight=False, markup=False
    )


@cache_app.command("clear")
def cache_clear(collection: CollectionOpt = None, as_json: JsonOpt = False) -> None:
    """Drop the cached token IDs of a collection (or of all collections)."""

    async def work(genesis: Genesis) -> dict[str, int]:
        return await genesis.cache_clear(collection)

    result = _run(work)
    out.print_json(_dump(result)) if as_json else out.print(
        _dump(result), highlight=False, markup=False
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Worker processes (share cache and KB)")
    ] = 1,
) -> None:
    """Serve the HTTP API (FastAPI + uvicorn), in one process or in N workers."""
    from genesis.server import ServeOptions, check_bind
    from genesis.server import serve as run_server

    try:
        settings = _open().settings  # validated here, before any worker starts
        bind = host or settings.server.host
        check_bind(bind, settings)
        config_dir = _state.get("config_dir")
        options = ServeOptions(
            _state.get("env"),
            str(config_dir) if config_dir is not None else None,
            dict(_state.get("overrides") or {}),
        )
        run_server(
            options,
            bind,
            port if port is not None else settings.server.port,
            workers=workers,
            loop=settings.server.loop,
            http=settings.server.http,
        )
    except GenesisError as exc:
        _fail(exc)


@keys_app.command("new")
def keys_new(
    key_id: Annotated[str, typer.Option("--id", help="The key's id, as logs will show it")] = "ops",
    scope: Annotated[
        list[str] | None, typer.Option("--scope", "-s", help="query | run | admin (repeat)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a new API key; print it once, with the auth.keys entry that holds its digest.

    Give the key to the client; put only the entry (or the key in an environment variable
    read as ``key: ${VAR}``) in the configuration.
    """
    from pydantic import ValidationError

    from genesis.config import ApiKeySettings
    from genesis.server._auth import hash_api_key, new_api_key

    key = new_api_key()
    try:
        entry = ApiKeySettings(id=key_id, sha256=hash_api_key(key), scopes=scope or ["query"])
    except ValidationError as exc:  # a bad id or scope
        problems = "; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        _fail(ValueError(problems.replace("--scopes", "--scope")))
    scopes = ", ".join(entry.scopes)
    if as_json:
        out.print_json(json.dumps({"key": key, **entry.model_dump()}))
        return
    # soft_wrap: one line each, whatever the terminal width, so that they copy whole.
    out.print(f"key:   {key}", markup=False, highlight=False, soft_wrap=True)
    out.print(
        f'entry: - {{id: {entry.id}, sha256: "{entry.sha256}", scopes: [{scopes}]}}',
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    err.print("The key is shown only now: store it where the client reads it.")


@keys_app.command("hash")
def keys_hash() -> None:
    """Print the SHA-256 digest of a key read from stdin (never from the command line,
    which shell history and ``ps`` would keep)."""
    from genesis.server._auth import hash_api_key

    key = sys.stdin.readline().strip()
    if not key:
        _fail(ValueError('no key on stdin; e.g. printf %s "$KEY" | genesis keys hash'))
    out.print(hash_api_key(key), markup=False, highlight=False, soft_wrap=True)


# Tracking commands live in their own module (events export, cost, profile).
from genesis._cli_tracking import cost, events_app, profile  # noqa: E402

app.add_typer(events_app, name="events")
app.command()(cost)
app.command()(profile)
