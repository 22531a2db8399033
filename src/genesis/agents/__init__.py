"""Agents (one class, profiles as data), their task results, and the SE-Darwin evolution loop
with its sandbox."""

from genesis.agents._agent import Agent, AnswerOptions
from genesis.agents._darwin import DarwinLoop, EvolutionResult, GenerationRecord, ScoredVariant
from genesis.agents._sandbox import SandboxLimits, SandboxResult, run_tests, run_tests_async
from genesis.agents._tasks import (
    AnswerRequest,
    AnswerResult,
    EvolutionReport,
    EvolveRequest,
    Finding,
    PlanRequest,
    PlanResult,
    PlanSection,
    ReviewRequest,
    ReviewResult,
    TaskName,
    TaskRequest,
    TaskResult,
    TestsRequest,
    TestsResult,
    VariantSummary,
    task_request,
)

__all__ = [
    "Agent",
    "AnswerOptions",
    "AnswerRequest",
    "AnswerResult",
    "DarwinLoop",
    "EvolutionReport",
    "EvolutionResult",
    "EvolveRequest",
    "Finding",
    "GenerationRecord",
    "PlanRequest",
    "PlanResult",
    "PlanSection",
    "ReviewRequest",
    "ReviewResult",
    "SandboxLimits",
    "SandboxResult",
    "ScoredVariant",
    "TaskName",
    "TaskRequest",
    "TaskResult",
    "TestsRequest",
    "TestsResult",
    "VariantSummary",
    "run_tests",
    "run_tests_async",
    "task_request",
]
