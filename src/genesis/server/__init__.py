"""The FastAPI server."""

from genesis.server._app import create_app
from genesis.server._workers import ServeOptions, create_worker_app, serve, with_loop_monitor

__all__ = ["ServeOptions", "create_app", "create_worker_app", "serve", "with_loop_monitor"]
