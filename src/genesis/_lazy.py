"""Names a package exports without importing their modules until first use.

``genesis ask`` should cost little more than Python's start-up and imports, so a package's
``__init__`` does not import what only some configurations need (Redis, SQLAlchemy, httpx,
Qdrant); ``__getattr__ = lazy_exports(__name__, {name: module})`` imports the module when the
name is first read. Type checkers see the names through ``if TYPE_CHECKING:`` imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving each of ``names`` from its module (by import path)."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
