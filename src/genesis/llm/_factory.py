"""Build the configured backend by name (config at the edge, library code stays generic)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

from genesis.config import LLMSettings
from genesis.errors import ConfigError
from genesis.llm._extractive import ExtractiveBackend
from genesis.llm._types import LLMBackend

if TYPE_CHECKING:  # the HTTP backends (and httpx) are imported only when configured
    import httpx

    from genesis.llm._replicas import ReplicaSpec

BackendKind = Literal["extractive", "completions", "chat"]


def build_backend(
    kind: BackendKind | str,
    *,
    base_url: str | None = None,
    api_key: SecretStr | str | None = None,
    client: httpx.AsyncClient | None = None,
    replicas: Sequence[ReplicaSpec] = (),
    **replica_options: Any,
) -> LLMBackend:
    """``"extractive"`` needs nothing; ``"completions"`` and ``"chat"`` need ``base_url``,
    except that ``"completions"`` may name ``replicas`` instead (then ``replica_options`` go
    to :class:`ReplicatedCompletionsBackend`)."""
    if kind == "extractive" and not replicas:
        return ExtractiveBackend()
    from genesis.llm._openai import ChatBackend, CompletionsBackend
    from genesis.llm._replicas import ReplicatedCompletionsBackend

    if kind == "completions" and replicas:
        if base_url:
            raise ConfigError("llm.base_url and llm.replicas are both set; keep one")
        return ReplicatedCompletionsBackend(
            replicas, api_key=api_key, client=client, **replica_options
        )
    if replicas and kind != "completions":
        raise ConfigError(f"llm.replicas needs the completions backend, not {kind!r}")
    if kind not in ("completions", "chat"):
        raise ConfigError(
            f"llm.backend: unknown backend {kind!r}; use extractive, completions or chat"
        )
    if not base_url:
        raise ConfigError(f"llm.base_url is required for the {kind!r} backend")
    cls = CompletionsBackend if kind == "completions" else ChatBackend
    return cls(base_url, api_key=api_key, client=client)


def replica_options(llm: LLMSettings) -> dict[str, Any]:
    """``build_backend`` keywords for ``llm.replicas`` (empty when none are configured)."""
    if not llm.replicas:
        return {}
    from genesis.llm._replicas import ReplicaSpec

    return {
        "replicas": [ReplicaSpec(r.url, r.weight) for r in llm.replicas],
        "policy": llm.replica_policy,
        "load_factor": llm.replica_load_factor,
        "prefix_blocks": llm.replica_prefix_blocks,
        "max_tries": llm.replica_max_tries,
        "health_interval_s": llm.replica_health_interval_s,
    }
