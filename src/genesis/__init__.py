"""Genesis: token-cached RAG for retrieval-heavy LLM agents.

The heavy names (the composed app, the pipeline) are imported on first access, so
``import genesis`` (and every CLI start) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from genesis._lazy import lazy_exports
from genesis.config import Settings, load_settings
from genesis.errors import GenesisError

if TYPE_CHECKING:
    from genesis.app import AskResult, Genesis
    from genesis.rag import RAGAnswer, TokenCachedRAG

__version__ = "0.1.0"

__all__ = [
    "AskResult",
    "Genesis",
    "GenesisError",
    "RAGAnswer",
    "Settings",
    "TokenCachedRAG",
    "__version__",
    "load_settings",
]

_LAZY = {
    "AskResult": "genesis.app",
    "Genesis": "genesis.app",
    "RAGAnswer": "genesis.rag",
    "TokenCachedRAG": "genesis.rag",
}


__getattr__ = lazy_exports(__name__, _LAZY)
