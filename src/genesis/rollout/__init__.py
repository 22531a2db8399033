"""Staged rollout of agents' fine-tuned models: sticky HMAC assignment, the state every
replica reads, sequential statistics, gates, the automatic mode and the report."""

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
from genesis.rollout._service import AUTO_LOCK, Rollout
from genesis.rollout._state import Change, RolloutState, RolloutStore, SqlRolloutStore
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
    "Rollout",
    "RolloutState",
    "RolloutStore",
    "SqlRolloutStore",
    "Unit",
    "Verdict",
    "VerdictKind",
    "compare",
    "decide",
    "experiment_name",
    "summarize",
    "run_auto",
    "threshold",
    "unit_for",
]
