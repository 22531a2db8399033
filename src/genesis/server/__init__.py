"""The FastAPI server."""

from genesis.server._app import create_app
from genesis.server._auth import AccessControl, Principal, check_bind, requires

__all__ = ["AccessControl", "Principal", "check_bind", "create_app", "requires"]
