"""The FastAPI server."""

from genesis.server._app import create_app
from genesis.server._auth import AccessControl, Principal, check_bind, requires
from genesis.server._workers import ServeOptions, create_worker_app, serve, with_loop_monitor

__all__ = [
    "AccessControl",
    "Principal",
    "ServeOptions",
    "check_bind",
    "create_app",
    "create_worker_app",
    "requires",
    "serve",
    "with_loop_monitor",
]
