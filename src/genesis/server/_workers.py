"""``genesis serve``: one process, or N uvicorn worker processes sharing the home and the L2.

Workers are separate interpreters (uvicorn spawns them and imports
:func:`create_worker_app` by name), so the settings travel through the environment as JSON:
the same ``--env``, ``--config-dir``, ``--home`` and ``--set`` the user gave. They share:

- the token cache's L2 (Redis, or the SQLite file in WAL mode);
- the knowledge base on disk: SQLite in WAL mode (readers never block the one writer), the
  demo ingest and the router's card cache written by one process under the home's file lock;
- metrics: ``PROMETHEUS_MULTIPROC_DIR`` points at a fresh folder, merged by ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: only h11
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from genesis._executor import CpuExecutor, default_workers, install_executor
from genesis._sched import request_realtime, request_slice
from genesis.errors import ConfigError
from genesis.observability import MULTIPROC_ENV, LoopLagMonitor, forget_this_process
from genesis.server._logs import flush_background_logs

logger = logging.getLogger(__name__)

# The variable that carries a worker's settings (JSON of ServeOptions) from `genesis serve`.
OPTIONS_ENV = "GENESIS_SERVE_OPTIONS"
_FACTORY = "genesis.server._workers:create_worker_app"


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What selects the settings: as given on the command line (``--set`` values unparsed)."""

    env: str | None = None
    config_dir: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    # How many worker processes `genesis serve` runs: each sizes its CPU executor to its
    # share of the cores (see executor_threads).
    workers: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeOptions:
        try:
            data = json.loads(text)
            workers = int(data.get("workers") or 1)
            overrides = dict(data.get("overrides") or {})
            return cls(data.get("env"), data.get("config_dir"), overrides, max(1, workers))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{OPTIONS_ENV} is not valid serve options: {exc}") from exc


def executor_threads(workers: int, cores: int | None = None) -> int:
    """CPU executor threads for one of ``workers`` processes: its share of the cores, at
    least one. N workers with a thread per core each would run N times as many CPU threads as
    there are cores, all contending for their process's GIL with its event loop; measured
    with ``benchmarks/service_load.py`` (2 workers, 2 cores), one thread each gave fewer
    late loop wake-ups than two, at about the same throughput for new questions (repeated
    ones, whose executor steps are short, ran slower; README, Measured)."""
    return max(1, (cores if cores is not None else default_workers()) // max(1, workers))


def with_loop_monitor(app: FastAPI, monitor: LoopLagMonitor | None = None) -> FastAPI:
    """Run a :class:`LoopLagMonitor` for the app's lifetime, around its own lifespan; on the
    way out, drop this worker's live gauges from the shared metrics folder."""
    inner = app.router.lifespan_context
    lag = monitor or LoopLagMonitor()

    @asynccontextmanager
    async def lifespan(scope_app: Any) -> AsyncIterator[Any]:
        try:
            async with lag, inner(scope_app) as state:
                yield state
        finally:
            forget_this_process()
            flush_background_logs()

    app.router.lifespan_context = lifespan
    app.state.loop_monitor = lag
    return app


def build_app(options: ServeOptions) -> FastAPI:
    """The served app: a (not yet warmed) Genesis from ``options``, with the lag monitor."""
    from genesis.app import Genesis
    from genesis.server._app import create_app

    genesis = Genesis.from_config(options.env, options.config_dir, overrides=options.overrides)
    if options.workers > 1:
        # Replaces the process-wide default before any step runs (nothing has used it yet).
        previous = install_executor(CpuExecutor(executor_threads(options.workers)))
        if previous is not None:
            previous.shutdown(wait=False)
    sys.setswitchinterval(genesis.settings.server.gil_switch_interval_ms / 1000.0)
    if genesis.settings.server.loop_slice_us > 0:
        # This thread runs the event loop (uvicorn calls the factory, then runs the loop,
        # in the worker's main thread); the executor's threads drop the slice again.
        request_slice(genesis.settings.server.loop_slice_us)
    if genesis.settings.server.loop_rt_priority > 0:
        # The same thread, real-time where permitted (the slice stays the fallback).
        request_realtime(genesis.settings.server.loop_rt_priority)
    return with_loop_monitor(create_app(genesis))


def create_worker_app() -> FastAPI:
    """uvicorn's factory in each worker process: the options ``serve`` left in the env."""
    text = os.environ.get(OPTIONS_ENV)
    if text is None:
        raise ConfigError(f"{OPTIONS_ENV} is not set: start workers with `genesis serve`")
    return build_app(ServeOptions.from_json(text))


def serve(
    options: ServeOptions,
    host: str,
    port: int,
    *,
    workers: int = 1,
    loop: str = "auto",
    http: str = "auto",
) -> None:
    """Serve until interrupted: in this process when ``workers`` is 1, else N workers.

    ``loop`` and ``http`` are ``server.loop`` and ``server.http`` (see :func:`http_protocol`).
    """
    import uvicorn

    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    protocol = http_protocol(http)
    # genesis.access logs each request with its key id: uvicorn's own access log cannot.
    logs = _log_config()
    if workers == 1:
        app = build_app(options)
        uvicorn.run(
            app, host=host, port=port, log_config=logs, access_log=False, http=protocol, loop=loop
        )
        return
    with _worker_environment(dataclasses.replace(options, workers=workers)):
        uvicorn.run(
            _FACTORY,
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_config=logs,
            access_log=False,
            http=protocol,
            loop=loop,
        )


def _log_config() -> dict[str, Any]:
    """uvicorn's logging configuration plus the ``genesis`` loggers (workers are spawned
    processes: this dictionary is all the logging set-up they get).

    The ``genesis`` loggers (the access line of every request among them) write on a
    background thread (:class:`~genesis.server._logs.BackgroundStreamHandler`), not on the
    event loop's; the app's lifespan flushes them on the way out (`with_loop_monitor`).
    uvicorn's own few lines (start, stop, a crashed request) keep a plain handler: after a
    SIGTERM uvicorn re-raises the signal once it has stopped, and the process then ends
    without running exit handlers, so a queued "shutdown complete" would be lost."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["background"] = {
        **config["handlers"]["default"],
        "class": "genesis.server._logs.BackgroundStreamHandler",
    }
    config["loggers"]["genesis"] = {
        "handlers": ["background"],
        "level": "INFO",
        "propagate": False,
    }
    return config


@contextmanager
def _worker_environment(options: ServeOptions) -> Iterator[Path]:
    """The options and a fresh metrics folder in ``os.environ`` (inherited by the spawned
    workers); both restored and the folder removed on exit."""
    saved = {key: os.environ.get(key) for key in (OPTIONS_ENV, MULTIPROC_ENV)}
    folder = Path(tempfile.mkdtemp(prefix="genesis-metrics-"))
    os.environ[OPTIONS_ENV] = options.to_json()
    os.environ[MULTIPROC_ENV] = str(folder)
    try:
        yield folder
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(folder, ignore_errors=True)


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with TCP_NODELAY on every connection.

    asyncio sets TCP_NODELAY only on sockets whose ``proto`` is IPPROTO_TCP; the listening
    socket uvicorn binds for ``--workers`` (and any socket made with ``socket.socket()``)
    has proto 0, so every response's body waited behind its headers for the client's delayed
    ACK: measured here, 40 ms added to each request on loopback.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport.get_extra_info("socket"))
        super().connection_made(transport)


if HttpToolsProtocol is not None:

    class NoDelayHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with TCP_NODELAY (see :class:`NoDelayH11Protocol`)."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            set_nodelay(transport.get_extra_info("socket"))
            super().connection_made(transport)


def http_protocol(name: str) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol class for ``server.http``, with TCP_NODELAY.

    ``auto`` takes httptools (a C parser: less of the event loop's time per request than
    the pure-Python h11) where it is installed, else h11.
    """
    if name not in ("auto", "h11", "httptools"):
        raise ConfigError(f"server.http must be auto, h11 or httptools, got {name!r}")
    if name == "h11" or (name == "auto" and HttpToolsProtocol is None):
        return NoDelayH11Protocol
    if HttpToolsProtocol is None:
        raise ConfigError("server.http is httptools but httptools is not installed")
    return NoDelayHttpToolsProtocol


def set_nodelay(sock: socket.socket | None) -> None:
    """TCP_NODELAY on a TCP socket (anything else is left alone)."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
