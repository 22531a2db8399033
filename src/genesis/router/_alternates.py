"""Which other collections a routed question may be answered from.

Agents' collections overlap in what they describe (support and documentation cover the same
product; a pricing question may be business advice or a plan's price), so a question routed
to one agent is also weighed against the other agents' collections:
`genesis.rag.TokenCachedRAG.answer` answers from the one whose retrieval evidence is best,
and keeps the routed one unless another is better by a margin. On the tuning split
(benchmarks/data/answer_quality/tune_questions.jsonl) weighing every collection beat weighing
only the agents the router found close (source_hit 0.96 against 0.94).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from genesis.router._types import RouteDecision


class _Profile(Protocol):
    @property
    def collection(self) -> str: ...


def answer_alternates(decision: RouteDecision, profiles: Mapping[str, _Profile]) -> list[str]:
    """The collections other than the chosen agent's to weigh for ``decision``'s question,
    the agents the router scored highest first; none for an explicitly chosen agent."""
    if decision.method == "explicit" or decision.agent not in profiles:
        return []
    own = profiles[decision.agent].collection
    names = [n for n in profiles if n != decision.agent]
    if decision.method == "similarity":
        names.sort(key=lambda n: -decision.scores.get(n, -1.0))
    out = [profiles[n].collection for n in names]
    return [c for c in dict.fromkeys(out) if c != own]
