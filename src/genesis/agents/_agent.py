"""One Agent class; the six agents are profiles (data) in configuration."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from genesis._executor import run_cpu
from genesis.agents._darwin import DarwinLoop, EvolutionResult, ScoredVariant
from genesis.agents._review import (
    FileChange,
    cite_guidelines,
    guideline_queries,
    merge_findings,
    parse_model_findings,
    parse_review_input,
    review_query,
    static_findings,
)
from genesis.agents._sandbox import SandboxLimits, run_tests_async
from genesis.agents._tasks import (
    EXTRACTIVE_ANSWER,
    NEEDS_MODEL_EVOLVE,
    NEEDS_MODEL_PLAN,
    NEEDS_MODEL_REVIEW,
    NEEDS_MODEL_TESTS,
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
    TaskRequest,
    TaskResult,
    TestsRequest,
    TestsResult,
    VariantSummary,
    check_python,
    evolve_query,
    extract_python,
    parse_plan,
    plan_query,
    plan_skeleton,
    sandbox_counts,
    task_request,
    tests_query,
)
from genesis.config import AgentProfile
from genesis.errors import AgentError
from genesis.llm import Generation, GenerationRequest, Usage
from genesis.observability import record_abstained
from genesis.rag import RAGAnswer, Source, TokenCachedRAG
from genesis.rag._history import Turn
from genesis.rag._pipeline import Generate

logger = logging.getLogger(__name__)

# (source, heading, text) of each chunk that was in a prompt, in prompt order.
Contexts = list[tuple[str, str, str]]
# Guideline chunks retrieved per rule a review flagged (the best is nearly always first).
_GUIDELINES_PER_RULE = 2


@dataclass(frozen=True, slots=True)
class AnswerOptions:
    """A client's generation settings for one answer; None keeps the agent profile's."""

    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()


class Agent:
    """An agent: its profile plus its token-cached pipeline.

    The pipeline shares the knowledge base, token cache and model registry with every other
    agent; what is the agent's own (system prompt, collection, top_k, budget, TTL, models)
    comes from the profile, so adding an agent is adding a profile. ``profile.task`` says
    which task :meth:`run` performs: ``answer``, ``plan``, ``tests``, ``review`` or
    ``evolve``, each a typed method with its own parameters; :meth:`run` takes the task's
    typed request (:meth:`request` builds one from loose input). Every task retrieves through
    the pipeline; when the pipeline's generator is the offline extractive one, a task returns
    what it can do honestly without a model and says so in ``note``. Parsing and checking
    (code, diffs, plans, model replies) runs in the CPU executor, never on the loop.

    ``generate`` is the generator the pipeline was built with (default: the pipeline's own);
    ``sandbox_limits`` bound every sandboxed test run; ``darwin_generations`` and
    ``darwin_population`` are SE-Darwin's defaults.
    """

    def __init__(
        self,
        profile: AgentProfile,
        rag: TokenCachedRAG,
        *,
        timeout_s: float,
        generate: Generate | None = None,
        sandbox_limits: SandboxLimits | None = None,
        darwin_generations: int = 3,
        darwin_population: int = 3,
    ) -> None:
        self.profile = profile
        self._rag = rag
        self._timeout_s = timeout_s
        # TokenCachedRAG has no public accessor for its generator; tasks wrap it to see the
        # chunk texts that went into the prompt.
        self._generate: Generate = generate or rag.generator
        self._limits = sandbox_limits or SandboxLimits()
        self._generations = darwin_generations
        self._population = darwin_population

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def collection(self) -> str:
        return self.profile.collection

    @property
    def rag(self) -> TokenCachedRAG:
        return self._rag

    async def answer(
        self,
        question: str,
        *,
        top_k: int | None = None,
        collection: str | None = None,
        generate: Generate | None = None,
        include_prompt: bool = False,
        history: Sequence[Turn] = (),
        options: AnswerOptions | None = None,
        abstain: bool = True,
        alternates: Sequence[str] = (),
    ) -> RAGAnswer:
        """Answer from this agent's collection (or ``collection``) with its own settings;
        ``generate`` replaces the pipeline's generator for this call; ``history`` is the
        conversation so far; ``options`` override the profile's generation settings;
        ``abstain`` lets weak retrieval evidence end the call with "not in the knowledge
        base" (counted, with the model call it saved); ``alternates`` are other collections
        whose better evidence may answer instead (see `genesis.rag.TokenCachedRAG.answer`)."""
        p, o = self.profile, options or AnswerOptions()
        answer = await self._rag.answer(
            question,
            collection or p.collection,
            top_k=p.top_k if top_k is None else top_k,
            budget_tokens=p.context_budget,
            max_tokens=p.max_tokens if o.max_tokens is None else o.max_tokens,
            temperature=p.temperature if o.temperature is None else o.temperature,
            model=p.models.finetuned or p.models.baseline,
            timeout_s=self._timeout_s,
            generate=generate,
            include_prompt=include_prompt,
            history=history,
            stop=o.stop,
            abstain=abstain,
            alternates=alternates,
        )
        if answer.abstained:
            record_abstained(self.name, saved_call=self._rag.calls_model)
        return answer

    # -- uniform entry point -----------------------------------------------------------------

    def request(self, task_input: str, **options: object) -> TaskRequest:
        """This agent's typed task request from a text and loose options (CLI flags, a form).

        ``answer``: a question (``top_k``, ``collection``); ``plan``: a brief; ``tests``:
        source code (``module_name``); ``review``: a unified diff or a source file
        (``filename``); ``evolve``: source code (``tests`` required, ``generations``,
        ``population``). Raises ValueError naming an option the task does not take, a missing
        one or one of the wrong type.
        """
        try:
            return task_request(self.profile.task, task_input, options)
        except ValueError as exc:
            raise ValueError(f"agent {self.name!r}: {exc}") from None

    async def run(self, request: TaskRequest) -> TaskResult:
        """Perform this agent's task (``profile.task``); ``request`` must be of that task.

        Raises AgentError when it is another task's request.
        """
        if request.task != self.profile.task:
            raise AgentError(
                f"agent {self.name!r} runs {self.profile.task!r} tasks, not {request.task!r}"
            )
        match request:
            case PlanRequest():
                return await self.plan(request.brief)
            case TestsRequest():
                return await self.write_tests(request.source, module_name=request.module_name)
            case ReviewRequest():
                return await self.review(request.diff_or_source, filename=request.filename)
            case EvolveRequest():
                return await self.evolve(
                    request.source,
                    request.tests,
                    generations=request.generations,
                    population=request.population,
                )
            case AnswerRequest():
                answer = await self.answer(
                    request.question, top_k=request.top_k, collection=request.collection
                )
                note = EXTRACTIVE_ANSWER if answer.extractive else None
                return AnswerResult(self.name, answer, not answer.extractive, note)

    # -- tasks ---------------------------------------------------------------------------------

    async def plan(self, brief: str) -> PlanResult:
        """A structured plan for ``brief`` from the retrieved templates.

        With a model: its plan, parsed into ordered sections. Offline: the templates' section
        skeleton, each section filled with the best extractive sentences for the brief.
        """
        if not brief.strip():
            raise ValueError("the brief is empty: say what business the plan is for")
        answer, contexts = await self._ask(plan_query(brief))
        offline = answer.extractive
        return PlanResult(
            agent=self.name,
            sections=await run_cpu(_plan_sections, brief, answer, contexts),
            sources=answer.sources,
            generated=not offline,
            model=answer.model,
            note=NEEDS_MODEL_PLAN if offline else None,
            text="" if offline else answer.answer,
            timings_ms=answer.timings_ms,
        )

    async def write_tests(self, source: str, *, module_name: str = "candidate") -> TestsResult:
        """pytest tests for ``source``; with a model they are run in the sandbox against it.

        Raises ValueError when ``source`` is empty or not Python.
        """
        await run_cpu(check_python, source, "the source to test")
        if not module_name.isidentifier() or module_name.startswith("test"):
            raise ValueError(
                f"module_name must be an identifier not starting with 'test', got {module_name!r}"
            )
        answer, _ = await self._ask(tests_query(source, module_name))
        result = TestsResult(
            agent=self.name,
            code=None,
            sources=answer.sources,
            generated=not answer.extractive,
            model=answer.model,
            module_name=module_name,
            timings_ms=answer.timings_ms,
        )
        if answer.extractive:
            result.note = NEEDS_MODEL_TESTS
            return result
        result.code = await run_cpu(extract_python, answer.answer)
        if result.code is None:
            result.note = "the model's reply held no Python code; nothing was run"
            result.output = answer.answer
            return result
        run = await run_tests_async(
            source, result.code, module_name=module_name, limits=self._limits
        )
        return dataclasses.replace(result, **sandbox_counts(run))

    async def review(self, diff_or_source: str, *, filename: str | None = None) -> ReviewResult:
        """Findings on the lines a unified diff adds (or on a whole source file).

        Deterministic checks always run; each finding cites the retrieved guideline for its
        rule. With a model, its findings are merged in (one per file, line and rule).
        Raises ValueError for empty input or a diff that adds no lines.
        """
        changes, static, query = await run_cpu(_static_review, diff_or_source, filename)
        guidelines, guideline_sources = await self._guidelines(static)
        answer, contexts = await self._ask(query)
        files = [c.path for c in changes]
        reply = None if answer.extractive else answer.answer
        findings = await run_cpu(_review_findings, reply, files, static, guidelines, contexts)
        return ReviewResult(
            agent=self.name,
            findings=findings,
            files=files,
            sources=_merge_sources(answer.sources, guideline_sources),
            generated=not answer.extractive,
            model=answer.model,
            note=NEEDS_MODEL_REVIEW if answer.extractive else None,
            timings_ms=answer.timings_ms,
        )

    async def _guidelines(self, static: list[Finding]) -> tuple[dict[str, Contexts], list[Source]]:
        """Per flagged rule, the guideline chunks for it, retrieved without asking a model.

        One small retrieval per rule: a single query naming every topic matches the
        summaries (checklists, rubrics) that mention them all better than each guideline.
        """
        queries = guideline_queries(static)
        asked = await asyncio.gather(
            *(self._ask(q, top_k=_GUIDELINES_PER_RULE, generate=False) for q in queries.values())
        )
        sources: list[Source] = []
        for answer, _ in asked:
            sources = _merge_sources(sources, answer.sources)
        return {rule: contexts for rule, (_, contexts) in zip(queries, asked, strict=True)}, sources

    async def evolve(
        self,
        source: str,
        tests: str,
        *,
        generations: int | None = None,
        population: int | None = None,
    ) -> EvolutionReport:
        """Evolve ``source`` against ``tests`` with SE-Darwin, the model proposing variants.

        Every variant runs in the sandbox under this agent's limits. Offline, the original is
        scored once and no variant is made. Raises ValueError when ``source`` is empty or
        ``tests`` are empty or not Python.
        """
        if not source.strip():
            raise ValueError("the source to evolve is empty")
        await run_cpu(check_python, tests, "the tests")
        population = self._population if population is None else population
        proposer = _Proposer(self, tests, population)
        loop = DarwinLoop(
            proposer,
            generations=self._generations if generations is None else generations,
            population=population,
            limits=self._limits,
        )
        evolution = await loop.evolve(source, tests)
        return self._evolution_report(evolution, proposer)

    # -- helpers -------------------------------------------------------------------------------

    async def _ask(
        self, query: str, *, top_k: int | None = None, generate: bool = True
    ) -> tuple[RAGAnswer, Contexts]:
        """One pipeline call that also returns the texts of the chunks in its prompt.

        The citations of the generation are dropped on the way back, so ``sources`` lists
        every chunk in the prompt: a task uses them all, not only the sentences quoted.
        ``generate=False`` retrieves and assembles only; no generator is called.
        """
        seen: list[GenerationRequest] = []

        async def wrapped(request: GenerationRequest) -> Generation:
            seen.append(request)
            if not generate:
                return _retrieval_only(request)
            generation = await self._generate(request)
            return dataclasses.replace(generation, citations=[])

        # A task (plan, tests, review) uses its guidelines whatever the question: no abstention.
        answer = await self.answer(query, top_k=top_k, generate=wrapped, abstain=False)
        request = seen[0]
        contexts = [
            (c.source, c.heading, text)
            for c, text in zip(request.contexts, request.context_texts, strict=True)
        ]
        return answer, contexts

    def _evolution_report(self, evolution: EvolutionResult, proposer: _Proposer) -> EvolutionReport:
        offline = proposer.offline
        return EvolutionReport(
            agent=self.name,
            generated=not offline and len(evolution.history) > 1,
            model=proposer.model,
            improved=evolution.best is not evolution.original,
            best_source=evolution.best_source,
            best=VariantSummary.of(evolution.best),
            original=VariantSummary.of(evolution.original),
            history=[[VariantSummary.of(v) for v in g.variants] for g in evolution.history],
            stopped_reason=evolution.stopped_reason,
            sources=proposer.sources,
            evolution=evolution,
            note=NEEDS_MODEL_EVOLVE if offline else None,
        )


def _plan_sections(brief: str, answer: RAGAnswer, contexts: Contexts) -> list[PlanSection]:
    """The model's plan parsed, or offline the templates' skeleton (blocking: executor)."""
    if answer.extractive:
        return plan_skeleton(brief, contexts)
    return parse_plan(answer.answer)


def _static_review(text: str, filename: str | None) -> tuple[list[FileChange], list[Finding], str]:
    """Parse the review input, run the deterministic checks and build the model's question
    (AST and regex work on up to 200 KB: blocking, so one executor call)."""
    changes = parse_review_input(text, filename)
    static = [f for change in changes for f in static_findings(change)]
    return changes, static, review_query(changes, text, static)


def _review_findings(
    reply: str | None,
    files: Sequence[str],
    static: list[Finding],
    guidelines: dict[str, Contexts],
    contexts: Contexts,
) -> list[Finding]:
    """The model's findings (none offline: ``reply`` None) merged with the static ones, each
    citing its guideline (blocking: executor)."""
    model = parse_model_findings(reply, files) if reply is not None else []
    return cite_guidelines(merge_findings(static, model), guidelines, contexts)


def _retrieval_only(request: GenerationRequest) -> Generation:
    prompt_tokens = len(request.prompt_ids) if request.prompt_ids is not None else 0
    return Generation("", "retrieval-only", Usage(prompt_tokens, 0), extractive=True)


def _merge_sources(first: list[Source], more: list[Source]) -> list[Source]:
    """``first`` then the chunks of ``more`` not in it, numbered on after ``first``."""
    known = {s.chunk_id for s in first}
    extra = [s for s in more if s.chunk_id not in known]
    start = max((s.number for s in first), default=0)
    return first + [dataclasses.replace(s, number=start + i) for i, s in enumerate(extra, 1)]


class _Proposer:
    """SE-Darwin's ``propose``: asks the model, through the pipeline, for whole new versions.

    Offline (an extractive answer) it raises :class:`AgentError`, which ends the loop after
    the original was scored: no fake variants.
    """

    def __init__(self, agent: Agent, tests: str, population: int) -> None:
        self._agent = agent
        self._tests = tests
        self._population = population
        self.offline = False
        self.model = ""
        self.sources: list[Any] = []

    async def __call__(self, best: str, ranked: list[ScoredVariant], generation: int) -> list[str]:
        query = evolve_query(best, self._tests, ranked)
        first, _ = await self._agent._ask(query)
        self.model, self.sources = first.model, first.sources
        if first.extractive:
            self.offline = True
            raise AgentError("generation needs a model: no LLM is configured")
        rest = await asyncio.gather(*(self._agent._ask(query) for _ in range(self._population - 1)))
        replies = [first.answer, *(answer.answer for answer, _ in rest)]
        variants = await run_cpu(_python_of, replies)
        logger.info(
            "darwin %s: generation %s, %s of %s replies held code",
            self._agent.name,
            generation,
            len(variants),
            len(replies),
        )
        return variants


def _python_of(replies: Sequence[str]) -> list[str]:
    """The Python code of every reply that holds some (parsing: blocking, executor)."""
    return [code for reply in replies if (code := extract_python(reply))]
