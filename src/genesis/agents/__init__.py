"""Agents (one class, profiles as data), their task results, and the SE-Darwin evolution loop
with its sandbox."""

from genesis.agents._agent import Agent
from genesis.agents._darwin import DarwinLoop, EvolutionResult, GenerationRecord, ScoredVariant
from genesis.agents._sandbox import SandboxLimits, SandboxResult, run_tests, run_tests_async
from genesis.agents._tasks import (
    AnswerResult,
    EvolutionReport,
    Finding,
    PlanResult,
    PlanSection,
    ReviewResult,
    TaskResult,
    TestsResult,
    VariantSummary,
)

__all__ = [
    "Agent",
    "AnswerResult",
    "DarwinLoop",
    "EvolutionReport",
    "EvolutionResult",
    "Finding",
    "GenerationRecord",
    "PlanResult",
    "PlanSection",
    "ReviewResult",
    "SandboxLimits",
    "SandboxResult",
    "ScoredVariant",
    "TaskResult",
    "TestsResult",
    "VariantSummary",
    "run_tests",
    "run_tests_async",
]
