"""The FastAPI server."""

from genesis.server._app import create_app

__all__ = ["create_app"]
