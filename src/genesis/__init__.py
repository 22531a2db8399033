"""Genesis: token-cached RAG for retrieval-heavy LLM agents."""

__version__ = "0.1.0"

__all__ = ["__version__"]
