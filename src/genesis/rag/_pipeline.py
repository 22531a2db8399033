"""retrieve -> tokens -> assemble -> generate, in one call."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from genesis._executor import run_cpu
from genesis._sync import run_blocking
from genesis.knowledge import ScoredChunk
from genesis.llm import Citation, Generation, GenerationRequest, Usage
from genesis.observability import StageTimer, record_cache_lookups
from genesis.rag._assembly import AssembledPrompt, PromptAssembler
from genesis.rag._evidence import Assessment, EvidenceScorer
from genesis.rag._history import Turn

logger = logging.getLogger(__name__)

Generate = Callable[[GenerationRequest], Awaitable[Generation]]
RetrievalMode = Literal["hybrid", "dense", "bm25"]
# The token cache namespace of conversation turns: no knowledge-base collection can have this
# name (collection names start with a letter or digit), so clearing a collection keeps them.
HISTORY_COLLECTION = "_history"
# An alternate collection answers instead of the routed one only when its evidence score
# (`genesis.rag.Assessment.choice`) is higher by this much (between two alternates, the
# higher score wins); fitted with the choice weights (benchmarks/collection_choice.py).
ALTERNATE_MARGIN = 0.055
# An alternate collection whose best dense score is this far below the best draft's so far is
# not weighed further (no token lookup, assembly or sentence-level evidence). On the tuning
# split no alternate that won was more than 0.15 below; at 0.2, 1,009 of its 1,510 alternate
# drafts stop after their search, and all 302 answers, sources and evidence are unchanged.
ALTERNATE_DENSE_GATE = 0.2


class _Retriever(Protocol):
    """What the pipeline retrieves through (a `KnowledgeBase`). Neither call may block the
    loop: the embedding and the search run in the CPU executor or are I/O."""

    async def embed_query_async(self, text: str) -> Any: ...

    async def search_vector(
        self, vector: Any, query: str, collection: str, top_k: int, mode: RetrievalMode
    ) -> list[ScoredChunk]: ...


class _TokenLookup(Protocol):
    async def get_many(
        self,
        collection: str,
        texts: Sequence[str],
        hashes: Sequence[str] | None = None,
        *,
        ttl_s: float | None = None,
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class Source:
    """A numbered source of an answer, as shown to the user."""

    number: int
    source: str
    heading: str
    chunk_id: str
    score: float


@dataclass(slots=True)
class RAGUsage:
    """Where the prompt's tokens came from.

    ``prompt_tokens`` is the assembled prompt in Genesis' tokenizer; ``cached_tokens`` counts
    those not tokenized for this request: the template pieces (tokenized once at start) plus
    chunk segments and history turns served from L1 or Redis. ``backend_prompt_tokens`` is
    what the backend reported (the same IDs for a completions backend; a chat API counts its
    own template).
    """

    prompt_tokens: int
    cached_tokens: int
    template_tokens: int
    chunk_tokens: int
    chunk_tokens_from_cache: int
    query_tokens: int
    completion_tokens: int
    backend_prompt_tokens: int  # as the backend counted them (a chat API adds its template)
    chunks_retrieved: int
    chunks_in_prompt: int
    chunks_from_cache: int
    history_tokens: int = 0  # earlier turns of the conversation, in the prompt
    history_turns: int = 0


@dataclass(slots=True)
class RAGAnswer:
    """An answer and where it came from.

    ``abstained`` is True when the knowledge base does not answer the question (the retrieval
    evidence fell below the calibrated threshold): ``answer`` then says so plainly, no model
    was called, ``sources`` is empty and ``see_also`` lists the closest articles. ``evidence``
    holds the measured values (see `genesis.rag.Evidence`) when they were measured, with
    ``score`` and the ``threshold`` it abstains below: the answerability model's probability
    on the knowledge base it was fitted on (`genesis.rag.AnswerabilityModel`), else the
    linear policy's score (`genesis.rag.AbstentionPolicy`).
    """

    answer: str
    sources: list[Source]
    usage: RAGUsage
    timings_ms: dict[str, float]
    model: str
    extractive: bool
    collection: str
    cache_tiers: dict[str, int] = field(default_factory=dict)
    prompt_text: str | None = None
    abstained: bool = False
    see_also: list[Source] = field(default_factory=list)
    evidence: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TokenCachedRAG:
    """The token-cached RAG core: one ``answer()`` call per question.

    Stage timings (ms) are reported under ``embed``, ``retrieve``, ``token_cache``,
    ``assemble``, ``evidence``, ``generate`` and ``total``: the names of the server's
    waterfall. Each stage's CPU work runs in the CPU executor (`genesis._executor`), so a
    stage's time includes its wait for a free worker.
    """

    def __init__(
        self,
        retriever: _Retriever,
        token_cache: _TokenLookup,
        assembler: PromptAssembler,
        generate: Generate,
        *,
        default_model: str = "baseline",
        max_context_tokens: int = 4096,
        cache_ttl_s: float | None = None,
        retrieval: RetrievalMode = "hybrid",
        evidence: EvidenceScorer | None = None,
        calls_model: bool = True,
    ) -> None:
        self._retriever = retriever
        self._evidence = evidence
        # Whether ``generate`` costs a model call (not the extractive backend): an abstention
        # then counts as a saved call.
        self._calls_model = calls_model
        self._cache = token_cache
        self._assembler = assembler
        self._generate = generate
        self._default_model = default_model
        self._max_context = max_context_tokens
        self._ttl_s = cache_ttl_s
        self._mode = retrieval

    @property
    def calls_model(self) -> bool:
        """Whether the default generator costs a model call (an abstention saves one)."""
        return self._calls_model

    @property
    def assembler(self) -> PromptAssembler:
        return self._assembler

    @property
    def generator(self) -> Generate:
        """The default ``request -> Generation`` callable (a per-call one may replace it)."""
        return self._generate

    async def answer(
        self,
        query: str,
        collection: str,
        *,
        top_k: int = 5,
        budget_tokens: int | None = None,
        max_tokens: int = 512,
        temperature: float = 0.2,
        model: str | None = None,
        mode: RetrievalMode | None = None,
        generate: Generate | None = None,
        timeout_s: float = 30.0,
        include_prompt: bool = False,
        history: Sequence[Turn] = (),
        stop: Sequence[str] = (),
        abstain: bool = True,
        alternates: Sequence[str] = (),
    ) -> RAGAnswer:
        """Answer ``query`` from ``collection``; see :class:`RAGAnswer`. ``history`` (oldest
        first) is the conversation so far: its turns' token IDs come from the token cache
        like chunks' and the newest that fit the budget enter the prompt.

        With an evidence scorer, the sentences of the prompt's chunks are ranked for the
        question first; unless ``abstain`` is False, weak evidence ends the call there with
        an abstained answer, and no generator is called. ``alternates`` are other collections
        to weigh too: the answer comes from the one with the best evidence (by a margin of
        ALTERNATE_MARGIN over ``collection``), and ``collection`` in the result says which.
        """
        query = _check_query(query)
        timer = StageTimer()
        budget = self._budget(budget_tokens, max_tokens)
        settings = _DraftSettings(
            top_k, mode or self._mode, budget, model, max_tokens, temperature, timeout_s
        )
        draft = await self._draft(query, collection, settings, history, timer)
        for other in dict.fromkeys(c for c in alternates if c != collection):
            # Another collection may hold the answer (support and documentation describe the
            # same product): its evidence is weighed like the first's, which keeps a margin.
            hits, vector = await self._retrieve(query, other, top_k, settings.mode, timer)
            if not may_win(hits, draft.hits):
                continue  # its search already shows it cannot win: spare the rest
            candidate = await self._weigh(query, other, hits, vector, settings, history, timer)
            margin = ALTERNATE_MARGIN if draft.collection == collection else 0.0
            if _better(candidate, draft, margin):
                draft = candidate
        hits, lookup, prompt, request = draft.hits, draft.lookup, draft.prompt, draft.request
        request.stop = list(stop)
        assessment = draft.assessment
        if assessment is not None and abstain and assessment.abstain:
            result = self._abstained(draft.collection, hits, lookup, prompt, request, timer)
        else:
            request.quotes = assessment.quotes if assessment is not None else []
            with timer.stage("generate"):
                generation = await (generate or self._generate)(request)
            result = self._result(query, draft.collection, hits, lookup, prompt, generation, timer)
            result.usage.cached_tokens += _cached_history_tokens(prompt, draft.past)
        if assessment is not None:
            result.evidence = {
                **assessment.evidence.as_dict(),
                "score": round(assessment.score, 4),
                "threshold": round(assessment.threshold, 4),
            }
        if include_prompt:
            result.prompt_text = prompt.text
        record_cache_lookups(list(lookup.tiers))
        # Stage metrics are recorded once per request, from the server's whole waterfall.
        return result

    async def _draft(
        self,
        query: str,
        collection: str,
        settings: _DraftSettings,
        history: Sequence[Turn],
        timer: StageTimer,
    ) -> _Draft:
        """Retrieve from ``collection``, assemble the prompt and weigh the evidence."""
        hits, vector = await self._retrieve(query, collection, settings.top_k, settings.mode, timer)
        return await self._weigh(query, collection, hits, vector, settings, history, timer)

    async def _weigh(
        self,
        query: str,
        collection: str,
        hits: list[ScoredChunk],
        vector: Any,
        settings: _DraftSettings,
        history: Sequence[Turn],
        timer: StageTimer,
    ) -> _Draft:
        """Assemble the prompt of ``collection``'s search ``hits`` and weigh the evidence."""
        s = settings
        chunks = [hit.chunk for hit in hits]
        with timer.stage("token_cache"):
            lookup, past = await self._token_ids(collection, chunks, history)
        history_ids = list(past.ids) if past is not None else []
        hits, lookup = _without_refused(hits, lookup)
        chunks = [hit.chunk for hit in hits]
        with timer.stage("assemble"):
            prompt = await self._assembler.assemble(
                query,
                chunks,
                lookup.ids,
                budget_tokens=s.budget,
                history=history,
                history_ids=history_ids,
            )
        request = self._request(
            query, prompt, hits, s.model, s.max_tokens, s.temperature, s.timeout_s
        )
        assessment = await self._assess(query, vector, hits, request, timer)
        return _Draft(collection, hits, lookup, prompt, request, assessment, past)

    async def _token_ids(
        self, collection: str, chunks: Sequence[Any], history: Sequence[Turn]
    ) -> tuple[Any, Any]:
        """The chunks' and the history's cache lookups, side by side (None: no history)."""
        texts = [self._assembler.chunk_segment_text(c) for c in chunks]
        chunk_lookup = self._cache.get_many(collection, texts, ttl_s=self._ttl_s)
        if not history:
            return await chunk_lookup, None
        turns = [turn.segment_text() for turn in history]
        lookup, past = await asyncio.gather(
            chunk_lookup, self._cache.get_many(HISTORY_COLLECTION, turns)
        )
        return lookup, past

    def answer_sync(self, query: str, collection: str, **kwargs: Any) -> RAGAnswer:
        """Blocking wrapper around :meth:`answer` (not for use inside a running loop)."""
        return run_blocking(
            lambda: self.answer(query, collection, **kwargs), "answer_sync", "answer"
        )

    async def _retrieve(
        self, query: str, collection: str, top_k: int, mode: RetrievalMode, timer: StageTimer
    ) -> tuple[list[ScoredChunk], Any]:
        with timer.stage("embed"):
            vector = await self._retriever.embed_query_async(query) if mode != "bm25" else None
        with timer.stage("retrieve"):
            hits = await self._retriever.search_vector(vector, query, collection, top_k, mode)
        return hits, vector

    async def _assess(
        self,
        query: str,
        vector: Any,
        hits: list[ScoredChunk],
        request: GenerationRequest,
        timer: StageTimer,
    ) -> Assessment | None:
        """Rank the prompt's sentences and weigh the evidence (CPU executor), or None."""
        if self._evidence is None:
            return None
        dense = [hit.scores.get("dense", 0.0) for hit in hits]
        by_id = {hit.chunk.id: score for hit, score in zip(hits, dense, strict=True)}
        relevance = [by_id.get(c.chunk_id, 0.0) for c in request.contexts]
        with timer.stage("evidence"):
            return await run_cpu(
                self._evidence.assess, query, vector, dense, request.context_texts, relevance
            )

    def _abstained(
        self,
        collection: str,
        hits: list[ScoredChunk],
        lookup: Any,
        prompt: AssembledPrompt,
        request: GenerationRequest,
        timer: StageTimer,
    ) -> RAGAnswer:
        see_also = _see_also(hits)
        generation = Generation(not_answered_text(see_also), "none", _no_usage(), extractive=True)
        result = self._result(request.query, collection, hits, lookup, prompt, generation, timer)
        result.sources, result.see_also, result.abstained = [], see_also, True
        return result

    def _budget(self, budget_tokens: int | None, max_tokens: int) -> int:
        room = self._max_context - max_tokens
        return min(budget_tokens, room) if budget_tokens else room

    def _request(
        self,
        query: str,
        prompt: AssembledPrompt,
        hits: list[ScoredChunk],
        model: str | None,
        max_tokens: int,
        temperature: float,
        timeout_s: float,
    ) -> GenerationRequest:
        contexts, texts = _contexts(prompt)
        return GenerationRequest(
            model=model or self._default_model,
            query=query,
            messages=self._assembler.messages(prompt),
            prompt_ids=prompt.ids,
            contexts=contexts,
            context_texts=texts,
            max_tokens=max_tokens,
            temperature=temperature,
            timeout_s=timeout_s,
        )

    def _result(
        self,
        query: str,
        collection: str,
        hits: list[ScoredChunk],
        lookup: Any,
        prompt: AssembledPrompt,
        generation: Generation,
        timer: StageTimer,
    ) -> RAGAnswer:
        scores = {hit.chunk.id: hit.score for hit in hits}
        included = [(item.number, item.chunk) for item in prompt.included]
        sources = [
            Source(n, c.source, c.heading, c.id, round(scores.get(c.id, 0.0), 6))
            for n, c in included
        ]
        text, sources = renumber_citations(generation.text, sources, generation.citations)
        usage = _usage(prompt, hits, lookup.tiers, generation)
        return RAGAnswer(
            answer=text,
            sources=sources,
            usage=usage,
            timings_ms=timer.as_dict(),
            model=generation.model,
            extractive=generation.extractive,
            collection=collection,
            cache_tiers=_count(lookup.tiers),
        )


@dataclass(frozen=True, slots=True)
class _DraftSettings:
    top_k: int
    mode: RetrievalMode
    budget: int
    model: str | None
    max_tokens: int
    temperature: float
    timeout_s: float


@dataclass(slots=True)
class _Draft:
    """One collection's retrieval, prompt and evidence, before anything is generated."""

    collection: str
    hits: list[ScoredChunk]
    lookup: Any
    prompt: AssembledPrompt
    request: GenerationRequest
    assessment: Assessment | None
    past: Any  # the history's cache lookup (None without history)


def may_win(hits: Sequence[ScoredChunk], best: Sequence[ScoredChunk]) -> bool:
    """Whether a collection whose search found ``hits`` is worth weighing against the draft
    that found ``best``: its best dense score is not ALTERNATE_DENSE_GATE below (without
    dense scores, as in a BM25-only search, nothing is spared)."""
    mine = max((h.scores.get("dense", 0.0) for h in hits), default=0.0)
    theirs = max((h.scores.get("dense", 0.0) for h in best), default=0.0)
    return mine >= theirs - ALTERNATE_DENSE_GATE


def _better(candidate: _Draft, current: _Draft, margin: float) -> bool:
    """Whether ``candidate``'s evidence beats ``current``'s by ``margin`` (ALTERNATE_MARGIN
    over the routed collection's draft, none between two alternates)."""
    if candidate.assessment is None or current.assessment is None:
        return False
    return candidate.assessment.choice > current.assessment.choice + margin


_MARKER = re.compile(r"\[(\d+)\]")
NOT_ANSWERED = "The knowledge base does not answer this question."


def not_answered_text(see_also: Sequence[Source]) -> str:
    """The plain answer of an abstention, naming the closest articles."""
    if not see_also:
        return NOT_ANSWERED
    closest = "; ".join(
        f"{s.source} ({s.heading.split(' > ')[0]})" if s.heading else s.source for s in see_also
    )
    return f"{NOT_ANSWERED} See also: {closest}."


def renumber_citations(
    text: str, sources: list[Source], citations: Sequence[Citation] = ()
) -> tuple[str, list[Source]]:
    """Number the cited sources 1, 2, 3... in the order the answer first cites them, and
    rewrite the ``[n]`` markers of ``text`` to match.

    The cited sources are ``citations`` when the backend gave them, else the sources whose
    marker appears in ``text``; with neither, every source is kept, in prompt order.
    """
    by_number = {s.number: s for s in sources}
    in_text = [int(m) for m in _MARKER.findall(text) if int(m) in by_number]
    cited = [c.number for c in citations if c.number in by_number] or in_text
    order = list(dict.fromkeys([n for n in in_text if n in cited] + cited))
    if not order:
        order = list(by_number)
    new = {old: i + 1 for i, old in enumerate(order)}

    def swap(match: re.Match[str]) -> str:
        old = int(match.group(1))
        return f"[{new[old]}]" if old in new else match.group(0)

    renumbered = [dataclasses.replace(by_number[old], number=new[old]) for old in order]
    return _MARKER.sub(swap, text), renumbered


def _see_also(hits: list[ScoredChunk], limit: int = 3) -> list[Source]:
    """The closest articles, one entry per source file, best first, numbered from 1."""
    seen: dict[str, ScoredChunk] = {}
    for hit in hits:
        seen.setdefault(hit.chunk.source, hit)
    best = list(seen.values())[:limit]
    return [
        Source(i + 1, h.chunk.source, h.chunk.heading, h.chunk.id, round(h.score, 6))
        for i, h in enumerate(best)
    ]


def _no_usage() -> Usage:
    return Usage(prompt_tokens=0, completion_tokens=0)


def _without_refused(hits: list[ScoredChunk], lookup: Any) -> tuple[list[ScoredChunk], Any]:
    """Leave out chunks whose segment the encoder refused (empty IDs); they are logged."""
    keep = [i for i, ids in enumerate(lookup.ids) if len(ids)]
    if len(keep) == len(hits):
        return hits, lookup
    for i in set(range(len(hits))) - set(keep):
        logger.warning("chunk %s left out: its segment cannot be tokenized", hits[i].chunk.id)
    lookup = dataclasses.replace(
        lookup,
        ids=[lookup.ids[i] for i in keep],
        tiers=[lookup.tiers[i] for i in keep],
    )
    return [hits[i] for i in keep], lookup


def _cached_history_tokens(prompt: AssembledPrompt, past: Any) -> int:
    """Tokens of the history turns in the prompt that the token cache served."""
    if past is None:
        return 0
    kept = prompt.history_kept
    return sum(len(past.ids[i]) for i in kept if past.tiers[i] in ("l1", "l2"))


def _check_query(query: str) -> str:
    cleaned = query.strip()
    if not cleaned:
        raise ValueError("query is empty")
    return cleaned


def _contexts(prompt: AssembledPrompt) -> tuple[list[Citation], list[str]]:
    contexts = [
        Citation(item.number, item.chunk.id, item.chunk.source, item.chunk.heading)
        for item in prompt.included
    ]
    return contexts, [item.chunk.text for item in prompt.included]


def _usage(
    prompt: AssembledPrompt,
    hits: list[ScoredChunk],
    tiers: Sequence[str],
    generation: Generation,
) -> RAGUsage:
    counts = prompt.token_counts
    # By position, not by id: the tier of each retrieved chunk object.
    tier_of = {id(hit.chunk): tier for hit, tier in zip(hits, tiers, strict=True)}
    cached = [i for i in prompt.included if tier_of.get(id(i.chunk)) in ("l1", "l2")]
    cached_chunk_tokens = sum(i.tokens for i in cached)
    template = int(counts.get("template", 0))
    return RAGUsage(
        prompt_tokens=len(prompt.ids),
        cached_tokens=template + cached_chunk_tokens,
        template_tokens=template,
        chunk_tokens=int(counts.get("chunks", 0)),
        chunk_tokens_from_cache=cached_chunk_tokens,
        query_tokens=int(counts.get("query", 0)),
        completion_tokens=generation.usage.completion_tokens,
        backend_prompt_tokens=generation.usage.prompt_tokens,
        chunks_retrieved=len(hits),
        chunks_in_prompt=len(prompt.included),
        chunks_from_cache=len(cached),
        history_tokens=int(counts.get("history", 0)),
        history_turns=prompt.history_turns,
    )


def _count(tiers: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for tier in tiers:
        out[tier] = out.get(tier, 0) + 1
    return out
