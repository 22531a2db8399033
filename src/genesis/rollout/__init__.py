"""Staged rollout of agents' fine-tuned models: sticky HMAC assignment, the state every
replica reads, sequential statistics, gates, the automatic mode and the report."""

from typing import TYPE_CHECKING

from genesis._lazy import lazy_exports
from genesis.rollout._assign import (
    BUCKETS,
    Assigner,
    Assignment,
    Unit,
    experiment_name,
    threshold,
    unit_for,
)
from genesis.rollout._auto import run_auto
from genesis.rollout._gates import VERDICTS, Verdict, VerdictKind, decide
from genesis.rollout._service import AUTO_LOCK, Rollout, current_assignment
from genesis.rollout._state import Change, LazyRolloutStore, RolloutState, RolloutStore
from genesis.rollout._stats import Arm, Comparison, compare, summarize

__all__ = [
    "AUTO_LOCK",
    "BUCKETS",
    "VERDICTS",
    "Arm",
    "Assigner",
    "Assignment",
    "Change",
    "Comparison",
    "LazyRolloutStore",
    "Rollout",
    "RolloutState",
    "RolloutStore",
    "SqlRolloutStore",
    "Unit",
    "Verdict",
    "VerdictKind",
    "compare",
    "current_assignment",
    "decide",
    "experiment_name",
    "open_rollout_store",
    "summarize",
    "run_auto",
    "threshold",
    "unit_for",
]

if TYPE_CHECKING:
    from genesis.rollout._sql import SqlRolloutStore, open_rollout_store


# SQLAlchemy is imported on first use (as genesis.events does): most commands never
# touch the rollout's tables.
__getattr__ = lazy_exports(
    __name__,
    {
        "SqlRolloutStore": "genesis.rollout._sql",
        "open_rollout_store": "genesis.rollout._sql",
    },
)
