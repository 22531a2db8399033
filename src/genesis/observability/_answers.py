"""Answer outcomes: answered or abstained, and the model calls an abstention saved.

Kept apart from `_metrics` (its own counter, registered in the same registry when metrics are
enabled) so that adding it touched none of the shared recorder's code.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from genesis.observability import _metrics

if TYPE_CHECKING:
    from prometheus_client import Counter

_lock = threading.Lock()
_counters: dict[int, tuple[Any, Counter, Counter]] = {}


def record_answer_outcome(collection: str, abstained: bool, model_call_saved: bool) -> None:
    """Count one answer by outcome; an abstention where a model would have been called also
    counts as a saved model call. No-op while metrics are off."""
    counters = _for_current_registry()
    if counters is None:
        return
    answers, saved = counters
    answers.labels(collection, "abstained" if abstained else "answered").inc()
    if abstained and model_call_saved:
        saved.labels(collection).inc()


def _for_current_registry() -> tuple[Counter, Counter] | None:
    state = _metrics._metrics
    if state is None:
        return None
    key = id(state.registry)
    with _lock:
        entry = _counters.get(key)
        if entry is None or entry[0] is not state.registry:
            entry = (state.registry, *_make(state.registry))
            _counters[key] = entry
    return entry[1], entry[2]


def _make(registry: Any) -> tuple[Counter, Counter]:
    from prometheus_client import Counter

    answers = Counter(
        "genesis_answers",
        "Answers by outcome (answered, abstained: the knowledge base does not answer)",
        ["collection", "outcome"],
        registry=registry,
    )
    saved = Counter(
        "genesis_model_calls_saved",
        "Model calls not made because the answer abstained",
        ["collection"],
        registry=registry,
    )
    return answers, saved
