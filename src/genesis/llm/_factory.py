"""Build the configured backend by name (config at the edge, library code stays generic)."""

from __future__ import annotations

from typing import Literal

import httpx
from pydantic import SecretStr

from genesis.errors import ConfigError
from genesis.llm._extractive import ExtractiveBackend
from genesis.llm._openai import ChatBackend, CompletionsBackend
from genesis.llm._types import LLMBackend

BackendKind = Literal["extractive", "completions", "chat"]


def build_backend(
    kind: BackendKind | str,
    *,
    base_url: str | None = None,
    api_key: SecretStr | str | None = None,
    client: httpx.AsyncClient | None = None,
) -> LLMBackend:
    """``"extractive"`` needs nothing; ``"completions"`` and ``"chat"`` need ``base_url``."""
    if kind == "extractive":
        return ExtractiveBackend()
    if kind not in ("completions", "chat"):
        raise ConfigError(
            f"llm.backend: unknown backend {kind!r}; use extractive, completions or chat"
        )
    if not base_url:
        raise ConfigError(f"llm.base_url is required for the {kind!r} backend")
    cls = CompletionsBackend if kind == "completions" else ChatBackend
    return cls(base_url, api_key=api_key, client=client)
