"""The composition root: settings in, a running Genesis out.

Everything heavy (embedding model, tokenizers, stores, clients) is built once in
:meth:`Genesis.warm_up` and closed in :meth:`Genesis.aclose`; the CLI and the server are thin
shells around this class.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from genesis._executor import run_cpu
from genesis._readiness import AgentChecks, probe_agent, readiness, register_builtin_checks
from genesis.agents import Agent, AnswerOptions
from genesis.cache import (
    CircuitBreaker,
    SqliteTokenStore,
    TokenCache,
    TokenStore,
)
from genesis.config import AgentProfile, Settings, load_settings, redact_url
from genesis.errors import (
    CacheError,
    ConfigError,
    NotWarmedUpError,
    PromptBudgetError,
    TokenizerError,
    UnknownAgentError,
)
from genesis.events import Cost, Tracker, note_fallback
from genesis.knowledge import (
    EmbeddedVectorStore,
    IngestReport,
    KnowledgeBase,
    MiniLMEmbedder,
    QueryBatcher,
    ScoredChunk,
    StoredEmbeddings,
    TextVectorStore,
    VectorStore,
)
from genesis.llm import (
    LLMBackend,
    ModelRegistry,
    ModelRoute,
    build_backend,
    replica_options,
    split_sentences,
)
from genesis.memory import InProcessSessionStore, SessionLimits, SessionStore
from genesis.observability import HealthChecks, record_fallback
from genesis.rag import (
    PACKAGED_ANSWERABILITY,
    AbstentionPolicy,
    AnswerabilityModel,
    EvidenceScorer,
    Generate,
    PromptAssembler,
    PromptTemplate,
    RAGAnswer,
    TokenCachedRAG,
    Turn,
    vocabulary,
)
from genesis.rollout import LazyRolloutStore, Rollout, unit_for
from genesis.router import (
    CardEmbeddingCache,
    HALORouter,
    RouteDecision,
    answer_alternates,
    cards_from_profiles,
)
from genesis.router._intent import load_examples
from genesis.tokens import HFTokenizer, SegmentEncoder, Tokenizer

logger = logging.getLogger(__name__)

DEMO_KB = Path(__file__).resolve().parent / "demo_kb"
Progress = Callable[[int, int, str], None]


@dataclass(slots=True)
class AskResult:
    """An answer with the routing decision that chose its agent."""

    agent: str
    route_method: str
    route_reason: str
    route_confidence: float
    answer: RAGAnswer
    # Set by the server: the id to send feedback for, what the request cost, and its
    # waterfall (stages in ms, ``other`` and ``total``; see genesis.observability).
    request_id: str | None = None
    cost: Cost | None = None
    waterfall: dict[str, float] = field(default_factory=dict)
    # Which model variant served, in which experiment, for which unit (genesis.rollout).
    rollout: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


T = TypeVar("T")


class _Part(Generic[T]):
    """A component built by :meth:`Genesis.warm_up`. Reading it before then raises
    :class:`NotWarmedUpError` (which says what to do) instead of an ``AttributeError``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _Part[T]: ...

    @overload
    def __get__(self, obj: Genesis, objtype: type | None = None) -> T: ...

    def __get__(self, obj: Genesis | None, objtype: type | None = None) -> T | _Part[T]:
        if obj is None:
            return self
        try:
            value: T = obj._parts[self.name]
        except KeyError:
            raise NotWarmedUpError(
                f"Genesis.{self.name} is built by warm_up(): call `await genesis.warm_up()` "
                "(or use `async with genesis`) first"
            ) from None
        return value

    def __set__(self, obj: Genesis, value: T) -> None:
        obj._parts[self.name] = value


class Genesis:
    """One process's Genesis: knowledge, token cache, agents, router, models.

    ``__init__`` is light (settings only); :meth:`warm_up` builds the components below, and
    reading one before that raises :class:`NotWarmedUpError`.
    """

    embedder = _Part[MiniLMEmbedder]()
    batcher = _Part[QueryBatcher]()
    tokenizer = _Part[Tokenizer]()
    encoder = _Part[SegmentEncoder]()
    store = _Part[TokenStore]()
    token_cache = _Part[TokenCache]()
    kb = _Part[KnowledgeBase]()
    backend = _Part[LLMBackend]()
    registry = _Part[ModelRegistry]()
    agents = _Part[dict[str, Agent]]()
    router = _Part[HALORouter]()
    tracker = _Part[Tracker]()
    sessions = _Part[SessionStore]()
    rollout = _Part[Rollout]()
    text_vectors = _Part[StoredEmbeddings]()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.home_path()
        self._parts: dict[str, Any] = {}
        self._ready = False
        self._preload = True
        self._vocabulary_chunks = 0  # chunks the abstention check's vocabulary was built from
        # True once the indexes are in memory too: a first request then loads nothing, so
        # only then may /health/ready say ok (false again while ensure_demo ingests).
        self._serving = False
        self._stack = AsyncExitStack()
        # Readiness checks: built-in ones here, other components register theirs.
        obs = settings.observability
        self.health_checks = HealthChecks(obs.health_timeout_s)
        register_builtin_checks(self, self.health_checks)
        self.agent_checks = AgentChecks(
            partial(probe_agent, self),
            timeout_s=obs.agent_check_timeout_s,
            interval_s=obs.agent_check_interval_s,
        )

    @classmethod
    def from_config(
        cls,
        env: str | None = None,
        config_dir: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Genesis:
        return cls(load_settings(env, config_dir, environ=environ, overrides=overrides))

    async def __aenter__(self) -> Genesis:
        await self.warm_up()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- lifecycle -----------------------------------------------------------------------

    async def warm_up(self, *, preload: bool = True) -> None:
        """Build every component once; idempotent. On any failure, whatever was already
        opened is closed again before the error propagates.

        ``preload`` (a server) also loads what a first request needs: the model weights, the
        router's card vectors and every collection's indexes. Without it (a CLI call that
        answers one question) each loads when first used: a question whose vectors are all
        stored (see :meth:`recall_query`) is then answered without loading the model.
        """
        if self._ready:
            return
        self._preload = preload
        stack = AsyncExitStack()
        try:
            await self._build(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._ready = True
        await self._report_memory_policy()
        # Under the home's lock: another worker may be ingesting the demo, and a collection
        # it has put in the catalog but not yet committed to the vector store must not be read.
        async with _home_lock(self.home):
            await self._load_indexes()
        self._serving = preload

    async def _load_models(self) -> None:
        """Model weights and the router's card vectors, off the loop. Under the home's lock:
        of several workers starting on a fresh home, one embeds the cards, the others read
        its cache file."""
        await asyncio.to_thread(self.embedder.warm_up)
        async with _home_lock(self.home):
            await asyncio.to_thread(self.router.warm_up)

    async def _build(self, stack: AsyncExitStack) -> None:
        s = self.settings
        self.home.mkdir(parents=True, exist_ok=True)
        # Cheap: the event store opens on the first event, on the recorder's own thread.
        self.tracker = Tracker.from_settings(s)
        stack.push_async_callback(self.tracker.aclose)  # writes every queued event
        # The ONNX graph of the model is written once, next to the knowledge base.
        self.embedder = MiniLMEmbedder(cache_dir=self.home / "models")
        self.batcher = QueryBatcher(
            self.embedder,
            max_batch=s.knowledge.query_batch_max,
            max_wait_ms=s.knowledge.query_batch_wait_ms,
        )
        stack.push_async_callback(self.batcher.aclose)
        self.tokenizer = await self._build_tokenizer(stack)
        self.encoder = SegmentEncoder(self.tokenizer)
        self.store = self._build_store()
        self.token_cache = TokenCache(
            self.encoder,
            self.store,
            l1_max_bytes=s.cache.l1_max_bytes,
            ttl_s=s.cache.ttl_s,
            op_timeout_s=s.cache.op_timeout_s,
            prefix=s.cache.prefix,
            breaker=CircuitBreaker(
                s.cache.breaker_failures, s.cache.breaker_reset_s, name="token-cache-l2"
            ),
        )
        stack.push_async_callback(self.token_cache.aclose)  # closes the store too
        self.kb = KnowledgeBase(
            self.home / "knowledge",
            self.embedder,
            self._build_vector_store(),
            chunk_tokens=s.knowledge.chunk_tokens,
            count_tokens=self._chunk_counter().count,
            embed_query_async=self.batcher.embed_query,
        )
        stack.push_async_callback(self.kb.aclose)
        self.backend = build_backend(
            s.llm.backend, base_url=s.llm.base_url, api_key=s.llm.api_key, **replica_options(s.llm)
        )
        self.registry = self._build_registry(self.backend)
        stack.push_async_callback(self.registry.aclose)  # closes the backend
        self.text_vectors = self._build_text_vectors(stack)
        self._evidence = self._build_evidence()
        self.agents = {name: await self._build_agent(p) for name, p in s.agents.items()}
        self.sessions = self._build_sessions()
        stack.push_async_callback(self.sessions.aclose)
        self.rollout = self._build_rollout(stack)
        self.router = HALORouter(
            cards_from_profiles(s.agents.values()),
            embed=self.embedder.embed_query,
            embed_batch=self.embedder.embed_documents,
            embed_async=self.batcher.embed_query,
            card_cache=CardEmbeddingCache(self.home / "router", self.embedder.fingerprint),
            threshold=s.router.threshold,
            default_agent=s.router.default_agent,
            registry=self.registry,
            evidence=self._retrieval_evidence,
            examples=(
                load_examples(s.router.examples_file, list(s.agents))
                if s.router.intent_classifier
                else ()
            ),
        )
        if self._preload:
            await self._load_models()

    async def aclose(self) -> None:
        """Close every client and store opened by :meth:`warm_up` (idempotent)."""
        if not self._ready:
            return
        self._ready = False
        await self._stack.aclose()

    def _chunk_counter(self) -> HFTokenizer:
        """The embedder's tokenizer counts chunk sizes; reused when it is also the cache's
        (loading tokenizer.json costs ~50 ms a time on this machine)."""
        if isinstance(self.tokenizer, HFTokenizer) and self.settings.tokenizer.kind == "embedder":
            return self.tokenizer
        return HFTokenizer.from_file(self.embedder.tokenizer_path)

    async def _build_tokenizer(self, stack: AsyncExitStack) -> Tokenizer:
        kind = self.settings.tokenizer.kind
        if kind == "embedder":
            return HFTokenizer.from_file(self.embedder.tokenizer_path, name="all-minilm-l6-v2")
        if kind == "hf":
            if not self.settings.tokenizer.path:
                raise ConfigError("tokenizer.path is required when tokenizer.kind is 'hf'")
            return HFTokenizer.from_file(self.settings.tokenizer.path)
        if not self.settings.llm.base_url:
            raise ConfigError("llm.base_url is required when tokenizer.kind is 'remote'")
        from genesis.tokens import RemoteTokenizer  # imports httpx: only when configured

        remote = RemoteTokenizer(
            self.settings.llm.base_url,
            self.settings.llm.default_model,
            api_key=self.settings.llm.api_key,
            vocab_size=self.settings.tokenizer.vocab_size,
        )
        stack.push_async_callback(remote.aclose)
        try:
            await remote.warm_up()
        except TokenizerError as exc:
            if self.settings.tokenizer.vocab_size is None and "vocab_size" in str(exc):
                raise ConfigError(
                    "tokenizer.vocab_size must be set for tokenizer.kind 'remote': the "
                    "server's /tokenize does not report it (take it from the model's config)"
                ) from exc
            raise
        return remote

    def _build_store(self) -> TokenStore:
        redis = self.settings.redis
        if redis.url is not None:
            url = redis.url.get_secret_value()
            kind = "Redis Cluster" if redis.cluster else "Redis"
            logger.info("token cache L2: %s at %s", kind, redact_url(url))
            from genesis.cache import RedisClusterTokenStore, RedisTokenStore

            store_class = RedisClusterTokenStore if redis.cluster else RedisTokenStore
            try:
                return store_class.from_url(
                    url, pool_size=redis.pool_size, socket_timeout_s=redis.socket_timeout_s
                )
            except ValueError as exc:  # e.g. a cluster URL naming a database other than 0
                raise ConfigError(f"redis.url: {exc}") from exc
        # Embedded default: a file next to the knowledge base, so token IDs survive between
        # CLI runs (an in-process dict would start cold every time).
        return SqliteTokenStore(self.home / "token_cache.sqlite")

    def _build_sessions(self) -> SessionStore:
        s = self.settings.sessions
        limits = SessionLimits(s.max_turns, s.ttl_s, s.max_turn_chars)
        if self.settings.redis.cluster:
            # The session store speaks to one Redis node; said at start, not hidden.
            logger.warning("sessions: kept in-process (the Redis session store is single-node)")
        if self.settings.redis.url is None or self.settings.redis.cluster:
            return InProcessSessionStore(limits, max_sessions=s.max_sessions)
        from genesis.memory import RedisSessionStore

        return RedisSessionStore.from_url(
            self.settings.redis.url.get_secret_value(),
            limits,
            prefix=s.prefix,
            socket_timeout_s=self.settings.redis.socket_timeout_s,
        )

    def _build_vector_store(self) -> VectorStore:
        k = self.settings.knowledge
        if k.vector_store == "embedded":
            return EmbeddedVectorStore(self.home / "knowledge" / "vectors")
        if not k.qdrant_url:
            raise ConfigError("knowledge.qdrant_url is required when vector_store is 'qdrant'")
        from qdrant_client import AsyncQdrantClient

        from genesis.knowledge import QdrantVectorStore

        key = k.qdrant_api_key.get_secret_value() if k.qdrant_api_key else None
        return QdrantVectorStore(AsyncQdrantClient(url=k.qdrant_url, api_key=key))

    def _build_registry(self, backend: LLMBackend) -> ModelRegistry:
        llm = self.settings.llm
        routes = {
            name: ModelRoute(p.models.finetuned, p.models.baseline)
            for name, p in self.settings.agents.items()
        }
        return ModelRegistry(
            routes,
            backend,
            total_budget_s=llm.timeout_s,
            attempt_timeout_s=min(llm.attempt_timeout_s, llm.timeout_s),
            max_retries=llm.max_retries,
            breaker_failures=llm.breaker_failures,
            breaker_reset_s=llm.breaker_reset_s,
            breaker_failure_rate=llm.breaker_failure_rate,
            breaker_window=llm.breaker_window,
            on_fallback=_on_fallback,
        )

    def _retrieval_evidence(
        self, task: str, vector: Any, agents: Sequence[str]
    ) -> dict[str, float]:
        """How well each agent's collection matches ``task``: the router's tie-breaker."""
        del task  # the dense score needs only the vector
        out = {}
        for name in agents:
            score = self.kb.best_dense_score(vector, self.settings.agents[name].collection)
            if score is not None:
                out[name] = score
        return out

    def _build_text_vectors(self, stack: AsyncExitStack) -> StoredEmbeddings:
        """Text vectors kept on disk: the evidence check's sentence vectors (a warm process
        reads them instead of embedding the sentences of every collection's best chunks
        again) and the CLI's query vectors. The file opens on first use, in the executor."""
        store = TextVectorStore(
            self.home / "text_vectors.sqlite", self.embedder.fingerprint, self.embedder.dim
        )
        stack.push_async_callback(asyncio.to_thread, store.close)
        return StoredEmbeddings(self.embedder.embed_documents, store)

    def _build_evidence(self) -> EvidenceScorer:
        """One sentence ranker for every agent (its sentence-vector cache is shared)."""
        answers = self.settings.answers
        policy = AbstentionPolicy(enabled=answers.abstain)
        model = None
        if answers.answerability_model:
            path = answers.answerability_file
            model = AnswerabilityModel.load(Path(path) if path else PACKAGED_ANSWERABILITY)
        if answers.abstain_threshold is not None:
            policy = dataclasses.replace(policy, threshold=answers.abstain_threshold)
            if model is not None:
                model = dataclasses.replace(model, threshold=answers.abstain_threshold)
        return EvidenceScorer(
            self.text_vectors.embed_documents,
            self.embedder.embed_query,
            policy,
            model=model,
            embedder=self.embedder.fingerprint,
        )

    def _build_rollout(self, stack: AsyncExitStack) -> Rollout:
        """The database opens on the first read (off the loop, by the state cache)."""
        from genesis.rollout import open_rollout_store

        store = LazyRolloutStore(functools.partial(open_rollout_store, self.settings))
        stack.callback(store.close)
        s = self.settings
        return Rollout(s.rollout, s.agents, store, open_events=self.tracker.recorder.store)

    async def _build_agent(self, profile: AgentProfile) -> Agent:
        assembler = PromptAssembler(self.encoder, PromptTemplate(system=profile.system_prompt))
        await assembler.warm_up()
        extractive = self.settings.llm.backend == "extractive"
        rag = TokenCachedRAG(
            self.kb,
            self.token_cache,
            assembler,
            self.backend.generate if extractive else self.registry.generator(profile.name),
            default_model="extractive" if extractive else profile.models.baseline,
            max_context_tokens=self.settings.llm.max_context_tokens,
            cache_ttl_s=profile.cache_ttl_s,
            retrieval=self.settings.knowledge.retrieval,
            evidence=self._evidence,
            calls_model=not extractive,
        )
        return Agent(profile, rag, timeout_s=self.settings.llm.timeout_s)

    async def _report_memory_policy(self) -> None:
        if self.settings.redis.url is None or not self.settings.redis.check_memory_policy:
            return
        try:
            report = await self.token_cache.check_memory_policy()
        except CacheError as exc:  # the cache is never a dependency, not even at start
            logger.warning("Redis memory policy not checked: %s", exc)
            return
        warning = report.get("warning")
        if warning:
            logger.warning("Redis memory policy: %s", warning)

    # -- knowledge -----------------------------------------------------------------------

    async def ensure_demo(self, progress: Progress | None = None) -> dict[str, IngestReport]:
        """Ingest the packaged demo knowledge base (unchanged files cost nothing), then load
        the new collections' indexes into memory: after this, a first request loads nothing.

        Several processes on one home (``genesis serve --workers N``) take turns under a
        file lock: the first ingests, the others find the files unchanged.
        """
        if not self.settings.knowledge.demo_collections:
            return {}
        self._serving = False  # new collections are not in memory until loaded below
        async with _home_lock(self.home):
            reports = await self._ingest_demo(progress)
        changed = any(r.chunks_added or r.chunks_removed for r in reports.values())
        # Without preloading, only the vocabulary is kept current here, and ingest() already
        # refreshed it if this process changed anything (an empty one: another process may
        # have ingested since warm_up).
        if self._preload or changed or not self._vocabulary_chunks:
            await self._load_indexes()
        self._serving = self._preload
        return reports

    async def _ingest_demo(self, progress: Progress | None) -> dict[str, IngestReport]:
        collections = sorted({p.collection for p in self.settings.agents.values()})
        reports = {}
        for name in collections:
            folder = DEMO_KB / name
            if folder.is_dir():
                # The demo is small (~900 sentences): its sentence vectors are made up front.
                reports[name] = await self.ingest(folder, name, progress=progress, sentences=True)
        return reports

    async def _load_indexes(self) -> None:
        """One search per collection loads its vectors, HNSW file and BM25 index (when
        preloading; otherwise a collection loads on its first search)."""
        if self._preload:
            for name in sorted(await self.kb.collections()):
                await self.kb.search("warm up", name, 1)
        await self._refresh_vocabulary()

    async def _refresh_vocabulary(self) -> None:
        """Teach the abstention check every term of the knowledge base (~50 ms for the demo)."""
        texts = []
        for name in sorted(await self.kb.collections()):
            texts += [f"{c.heading}\n{c.text}" for c in await self.kb.all_chunks(name)]
        vocab = await run_cpu(vocabulary, texts)
        self._evidence.set_vocabulary(vocab)
        self._vocabulary_chunks = vocab.n

    @property
    def serving(self) -> bool:
        """Whether a first request would load nothing: :meth:`warm_up` is done and no
        :meth:`ensure_demo` is ingesting."""
        return self._ready and self._serving

    async def ingest(
        self,
        path: str | Path,
        collection: str,
        *,
        progress: Progress | None = None,
        sentences: bool | None = None,
    ) -> IngestReport:
        """Ingest a folder; new chunks are tokenized into the cache ahead of traffic.

        With ``sentences`` (default: ``knowledge.sentence_vectors_at_ingest``) every chunk's
        sentences are embedded for the evidence check now; otherwise each is embedded the
        first time an answer weighs it and stored then (a corpus has ~10 sentences a chunk:
        embedding them all would cost more than ingesting it).
        """
        report = await self.kb.ingest(Path(path), collection, progress=progress)
        if sentences is None:
            sentences = self.settings.knowledge.sentence_vectors_at_ingest
        if report.chunks_added:
            await self.cache_warm(collection)
            if sentences:
                await self.warm_sentences(collection, progress=progress)
        if report.chunks_added or report.chunks_removed:
            await self._refresh_vocabulary()
        return report

    async def warm_sentences(self, collection: str, *, progress: Progress | None = None) -> int:
        """Embed the sentences the evidence check will weigh in ``collection``'s chunks and
        store them (those already stored cost nothing); returns how many were embedded."""
        chunks = await self.kb.all_chunks(collection)
        texts = await run_cpu(evidence_sentences, [c.text for c in chunks])
        return await run_cpu(self.text_vectors.warm, texts, progress=progress)

    async def recall_query(self, text: str) -> bool:
        """Put ``text``'s stored query vector (stored by an earlier process, see
        :meth:`remember_query`) in the query-embedding cache; False when none is stored.

        For a process that answers one question (the CLI): the server keeps query vectors in
        memory only, rather than writing every new question to disk.
        """
        [vector] = await run_cpu(self.text_vectors.store.get_many, [text])
        if vector is None:
            return False
        self.embedder.cache_query(text, vector)
        return True

    async def remember_query(self, text: str) -> None:
        """Store ``text``'s query vector if this process embedded it (see :meth:`recall_query`)."""
        vector = self.embedder.cached_query(text)
        if vector is not None:
            await run_cpu(self.text_vectors.store.put_many, [text], vector[None, :])

    async def search(
        self, query: str, collection: str, *, top_k: int = 5, mode: str = "hybrid"
    ) -> list[ScoredChunk]:
        return await self.kb.search(query, collection, top_k, mode=mode)  # type: ignore[arg-type]

    # -- agents --------------------------------------------------------------------------

    def agent(self, name: str) -> Agent:
        try:
            return self.agents[name]
        except KeyError:
            known = ", ".join(sorted(self.agents))
            raise UnknownAgentError(f"unknown agent {name!r}; known agents: {known}") from None

    def route(self, text: str, *, agent: str | None = None) -> RouteDecision:
        """Blocking routing (CLI); the server awaits :meth:`route_async`."""
        return self.router.route(text, agent=agent)

    async def route_async(self, text: str, *, agent: str | None = None) -> RouteDecision:
        """Routing that embeds the text off the event loop."""
        return await self.router.route_async(text, agent=agent)

    async def ask(
        self,
        question: str,
        *,
        agent: str | None = None,
        collection: str | None = None,
        top_k: int | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        request_id: str | None = None,
        history: Sequence[Turn] = (),
        options: AnswerOptions | None = None,
        generate_for: Callable[[str, bool], Generate | None] | None = None,
    ) -> AskResult:
        """Route (unless ``agent`` is given) and answer through the token-cached pipeline.

        ``history`` is the conversation so far (oldest first), ``options`` the client's
        generation settings, and ``generate_for(agent, finetuned)`` may give the generator to
        use once the agent and its model variant are chosen (the streaming endpoint's).
        The agent's rollout picks the variant for the unit: the user, else the session, else
        this request (``request_id``, made up when not given).

        A question longer than half of the agent's context budget (in tokens of the prompt's
        tokenizer) is refused with :class:`PromptBudgetError` before anything is embedded.
        """
        # "route" covers checking the question's length (a tokenizer call) and routing.
        began = time.perf_counter()
        await self.check_question(question, agent)
        decision = await self.router.route_async(question, agent=agent)
        route_ms = (time.perf_counter() - began) * 1000.0
        unit = unit_for(user_id, session_id, request_id or uuid.uuid4().hex)
        assignment = await self.rollout.assign(decision.agent, unit)
        finetuned = assignment.variant == "finetuned"
        answer = await self.agent(decision.agent).answer(
            question,
            top_k=top_k,
            collection=collection,
            history=history,
            options=options,
            generate=(generate_for or self._generator)(decision.agent, finetuned),
            alternates=[] if collection else self._alternates(decision),
        )
        # Routing embeds the question first (the pipeline then hits the query-embedding
        # cache), so its time belongs in the waterfall.
        stages = answer.timings_ms
        total = stages.pop("total") + route_ms
        answer.timings_ms = {"route": round(route_ms, 3), **stages, "total": round(total, 3)}
        return AskResult(
            decision.agent,
            decision.method,
            decision.reason,
            decision.confidence,
            answer,
            rollout=assignment.as_dict(),
        )

    def _alternates(self, decision: RouteDecision) -> list[str]:
        """Other collections whose evidence may answer a routed question (none when the
        caller named the agent)."""
        return answer_alternates(decision, self.settings.agents)

    def _generator(self, agent: str, finetuned: bool) -> Generate | None:
        """The registry's generator for the chosen variant (None: the pipeline's own, as the
        offline extractive backend has no models to choose between)."""
        if self.settings.llm.backend == "extractive":
            return None
        return self.registry.generator(agent, use_finetuned=finetuned)

    async def check_question(self, question: str, agent: str | None = None) -> int:
        """The question's token count; PromptBudgetError when it cannot fit ``agent``'s
        budget (the smallest budget of all agents when the router is to choose)."""
        if agent is not None:
            profiles = [self.agent(agent).profile]
        else:
            profiles = list(self.settings.agents.values())
        limit = min(self._prompt_budget(p) for p in profiles) // 2
        [ids] = await self.tokenizer.encode_batch([question])
        if len(ids) > limit:
            who = f"agent {agent!r}" if agent else "every agent"
            raise PromptBudgetError(
                f"the question is {len(ids)} tokens long; {who} accepts at most {limit} "
                "(half of its context budget, so that retrieved context still fits)"
            )
        return len(ids)

    def _prompt_budget(self, profile: AgentProfile) -> int:
        room = self.settings.llm.max_context_tokens - profile.max_tokens
        return min(profile.context_budget, room)

    def describe_agents(self) -> list[dict[str, Any]]:
        return [
            {
                "name": p.name,
                "description": p.description,
                "collection": p.collection,
                "task": p.task,
                "top_k": p.top_k,
                "cache_ttl_s": p.cache_ttl_s,
                "models": p.models.model_dump(),
            }
            for p in self.settings.agents.values()
        ]

    # -- cache ---------------------------------------------------------------------------

    async def cache_stats(self) -> dict[str, Any]:
        stats = self.token_cache.stats().as_dict()
        stats["store"] = type(self.store).__name__
        return stats

    async def cache_warm(self, collection: str | None = None) -> dict[str, int]:
        """Tokenize every chunk of ``collection`` (or all) into the cache."""
        names = [collection] if collection else sorted(await self.kb.collections())
        assembler = next(iter(self.agents.values())).rag.assembler
        warmed: dict[str, int] = {}
        for name in names:
            chunks = await self.kb.all_chunks(name)
            texts = [assembler.chunk_segment_text(c) for c in chunks]
            warmed[name] = await self.token_cache.warm(name, texts)
        await self.token_cache.flush()
        return warmed

    async def cache_clear(self, collection: str | None = None) -> dict[str, int]:
        names = [collection] if collection else sorted(await self.kb.collections())
        return {name: await self.token_cache.invalidate(name) for name in names}

    # -- health --------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """Readiness: each dependency's state and latency (see :mod:`genesis._readiness`);
        ``degraded`` when a non-critical one is down, ``down`` when the knowledge store is,
        ``starting`` until :meth:`warm_up` is done and while :meth:`ensure_demo` runs."""
        return await readiness(self, self.health_checks)

    async def check_agent(self, agent: str) -> dict[str, Any]:
        """One real tiny request through ``agent`` (rate-limited, see ``AgentChecks``)."""
        self.agent(agent)  # an unknown name is an error, not a check
        return await self.agent_checks.check(agent)


def _on_fallback(agent: str, from_model: str, to_model: str, reason: str) -> None:
    """A fallback is a metric and a fact of the request's event."""
    record_fallback(agent, from_model, to_model, reason)
    note_fallback(agent, from_model, to_model, reason)


def evidence_sentences(chunk_texts: Sequence[str]) -> list[str]:
    """The sentences of ``chunk_texts`` whose vectors `EvidenceScorer.assess` asks for: it
    splits a prompt's chunk texts with the same `split_sentences`, one chunk at a time."""
    return [s.text for s in split_sentences(chunk_texts)]


@asynccontextmanager
async def _home_lock(home: Path) -> AsyncIterator[None]:
    """An exclusive ``fcntl`` lock on ``home/.lock`` across processes, awaited off the loop."""
    with (home / ".lock").open("a+b") as fh:
        await asyncio.to_thread(fcntl.flock, fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
