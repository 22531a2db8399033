"""HALO routing: explicit agent, then rules, then embedding similarity, then a default."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from genesis._sync import run_blocking
from genesis.errors import AgentError, ConfigError, UnknownAgentError
from genesis.router._rules import CompiledRules, RuleHit
from genesis.router._types import AgentCard, RouteDecision

if TYPE_CHECKING:
    from genesis.llm import Message

logger = logging.getLogger(__name__)

EmbedFn = Callable[[str], npt.NDArray[Any]]
_F32 = npt.NDArray[np.float32]


# With all-MiniLM-L6-v2 and the default cards, off-topic tasks ("weather in Paris") scored at
# most 0.19 and in-domain tasks mostly above 0.25 (benchmarks/router_accuracy.py).
DEFAULT_THRESHOLD = 0.22


class ChatRegistry(Protocol):
    """What the router needs of a model registry (``genesis.llm.ModelRegistry`` fits).

    ``chat_async`` answers ``messages`` with the agent's fine-tuned model when
    ``use_finetuned`` (falling back to its baseline when ``use_fallback``).
    """

    async def chat_async(
        self,
        agent: str,
        messages: Sequence[Message],
        *,
        use_finetuned: bool = ...,
        use_fallback: bool = ...,
    ) -> Any: ...


class HALORouter:
    """Routes a task to one agent: explicit name > rules > similarity > ``default_agent``.

    ``embed`` maps a text to a vector (normalised or not); without it the router decides by
    rules alone. Card texts are embedded once, in :meth:`warm_up` (called lazily by
    :meth:`route`). An agent's similarity to a task is the mean of (a) the best cosine over
    its card texts and (b) the cosine to the centroid of those texts; a best similarity below
    ``threshold`` routes to ``default_agent``.
    """

    def __init__(
        self,
        cards: Sequence[AgentCard],
        *,
        embed: EmbedFn | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        default_agent: str,
        registry: ChatRegistry | None = None,
    ) -> None:
        _check_cards(cards, default_agent, threshold)
        self._cards = list(cards)
        self._names = [c.name for c in cards]
        self._rules = CompiledRules(cards)
        self._embed = embed
        self._threshold = threshold
        self._default = default_agent
        self._registry = registry
        self._card_matrix: _F32 | None = None
        self._centroids: _F32 | None = None
        self._card_slices: list[slice] = []

    @property
    def agents(self) -> list[str]:
        """The agent names, in card order."""
        return list(self._names)

    @property
    def default_agent(self) -> str:
        return self._default

    def warm_up(self) -> None:
        """Embed every card's description and examples (once); no-op without an embedder."""
        if self._embed is None or self._card_matrix is not None:
            return
        rows: list[_F32] = []
        slices: list[slice] = []
        for card in self._cards:
            start = len(rows)
            rows.extend(self._embed_text(text) for text in card.texts())
            slices.append(slice(start, len(rows)))
        # Assigned only once everything is embedded: a failed warm-up leaves no half state.
        matrix = np.stack(rows)
        self._centroids = np.stack([_unit(matrix[s].mean(axis=0)) for s in slices])
        self._card_slices = slices
        self._card_matrix = matrix
        logger.info("router warmed up: %s card texts embedded", len(rows))

    def route(self, task: str, *, agent: str | None = None) -> RouteDecision:
        """Pick the agent for ``task``; ``agent`` (if given) wins but must be known."""
        if agent is not None:
            self._check_known(agent)
            return RouteDecision(agent, 1.0, "explicit agent", "explicit")
        if not isinstance(task, str):
            raise AgentError(f"a task to route must be text, not {type(task).__name__}")
        if not task or not task.strip():
            raise AgentError("cannot route an empty task: give the task text or an agent name")
        hits = self._rules.match(task)
        if hits:
            return self._by_rules(task, hits)
        return self._by_similarity(task)

    def similarities(self, task: str) -> dict[str, float]:
        """Similarity of ``task`` to each agent: mean of best-text and centroid cosine.

        The best single text rewards a close example; the centroid damps one lucky example
        of an otherwise unrelated agent (on the labelled set: 0.81 max-only, 0.89 mixed).
        """
        if self._embed is None:
            raise AgentError("this router has no embedder: similarity routing is off")
        self.warm_up()
        assert self._card_matrix is not None and self._centroids is not None  # see warm_up
        query = self._embed_text(task)
        sims = self._card_matrix @ query
        central = self._centroids @ query
        return {
            name: 0.5 * float(sims[s].max()) + 0.5 * float(central[i])
            for i, (name, s) in enumerate(zip(self._names, self._card_slices, strict=True))
        }

    async def execute_with_finetuned_model_async(
        self,
        agent: str,
        messages: Sequence[Message],
        use_finetuned: bool = True,
        use_fallback: bool = True,
    ) -> Any:
        """Run ``messages`` on ``agent``'s fine-tuned model through the model registry."""
        self._check_known(agent)
        if self._registry is None:
            raise AgentError(
                "HALORouter has no model registry: pass registry= to run agents on their models"
            )
        return await self._registry.chat_async(
            agent, messages, use_finetuned=use_finetuned, use_fallback=use_fallback
        )

    def execute_with_finetuned_model(
        self,
        agent: str,
        messages: Sequence[Message],
        use_finetuned: bool = True,
        use_fallback: bool = True,
    ) -> Any:
        """Blocking :meth:`execute_with_finetuned_model_async`; not inside a running loop."""
        return run_blocking(
            lambda: self.execute_with_finetuned_model_async(
                agent, messages, use_finetuned, use_fallback
            ),
            "execute_with_finetuned_model",
            "execute_with_finetuned_model_async",
        )

    def _check_known(self, agent: str) -> None:
        if agent not in self._names:
            known = ", ".join(self._names)
            raise UnknownAgentError(f"unknown agent {agent!r}; known agents: {known}")

    def _by_rules(self, task: str, hits: list[RuleHit]) -> RouteDecision:
        scores = {h.agent: h.strength for h in hits}
        top = max(scores.values())
        tied = [h for h in hits if h.strength == top]
        winner = tied[0]
        if len(tied) > 1 and self._embed is not None:
            # Rules cannot separate these agents; let the task's meaning decide among them.
            sims = self.similarities(task)
            winner = max(tied, key=lambda h: sims[h.agent])
        confidence = top / sum(scores.values())
        reason = f"rule: {winner.describe()}"
        if len(tied) > 1:
            reason += f" (tied with {', '.join(h.agent for h in tied if h is not winner)})"
        return RouteDecision(winner.agent, confidence, reason, "rule", scores)

    def _by_similarity(self, task: str) -> RouteDecision:
        if self._embed is None:
            reason = "default: no rule matched and no embedder is configured"
            return RouteDecision(self._default, 0.0, reason, "default")
        scores = self.similarities(task)
        best = max(scores, key=lambda name: scores[name])
        sim = scores[best]
        if sim < self._threshold:
            reason = (
                f"default: best similarity {sim:.2f} below threshold {self._threshold:.2f}"
                f" (best was {best!r})"
            )
            return RouteDecision(self._default, 0.0, reason, "default", scores)
        reason = f"similarity {sim:.2f} to {best!r}"
        return RouteDecision(best, min(max(sim, 0.0), 1.0), reason, "similarity", scores)

    def _embed_text(self, text: str) -> _F32:
        assert self._embed is not None
        vec = np.asarray(self._embed(text), dtype=np.float32).reshape(-1)
        if not np.any(vec):
            raise AgentError(f"the embedder returned a zero vector for {text[:60]!r}")
        return _unit(vec)


def _unit(vec: _F32) -> _F32:
    return vec / np.float32(np.linalg.norm(vec))


def _check_cards(cards: Sequence[AgentCard], default_agent: str, threshold: float) -> None:
    if not cards:
        raise ConfigError("router: no agent cards given")
    names = [c.name for c in cards]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"router: duplicate agent card names: {', '.join(dupes)}")
    if any(not n or not n.strip() for n in names):
        raise ConfigError("router: an agent card has an empty name")
    if default_agent not in names:
        raise ConfigError(
            f"router: default_agent {default_agent!r} is not among the agents: {', '.join(names)}"
        )
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(
            f"router: threshold must be a cosine similarity in [-1, 1], got {threshold}"
        )
