"""HALO routing: explicit agent, then rules, then embedding similarity, then a default."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from genesis._executor import run_cpu
from genesis._sync import run_blocking
from genesis.errors import AgentError, ConfigError, UnknownAgentError
from genesis.router._card_cache import CardEmbeddingCache
from genesis.router._intent import (
    BAG_DIM,
    STEPS,
    IntentClassifier,
    bag_of_terms,
    intent_features,
)
from genesis.router._request import read_request, request_text
from genesis.router._rules import CompiledRules, RuleHit
from genesis.router._types import AgentCard, RouteDecision

if TYPE_CHECKING:
    from genesis.llm import Message

logger = logging.getLogger(__name__)

EmbedFn = Callable[[str], npt.NDArray[Any]]
# (task, task vector, agent names) -> the best retrieval score in each agent's collection.
EvidenceFn = Callable[[str, npt.NDArray[np.float32], Sequence[str]], Mapping[str, float]]
EmbedBatchFn = Callable[[Sequence[str]], npt.NDArray[Any]]
AsyncEmbedFn = Callable[[str], Awaitable[npt.NDArray[Any]]]
_F32 = npt.NDArray[np.float32]


# With all-MiniLM-L6-v2 and the default cards, off-topic tasks ("weather in Paris") scored at
# most 0.19 and in-domain tasks mostly above 0.25 (benchmarks/router_accuracy.py).
DEFAULT_THRESHOLD = 0.22
# An agent with a matched keyword gets this added to its similarity, once however many of its
# keywords match: keywords name a topic, and several of one agent name the same topic
# ("webhook endpoint"). Two at 0.15 each outweighed a support card at 0.65 (a webhook
# signature failure sent to the API reference). A topic word helps, but a card that fits the
# task better by more than this still wins ("refund" in a request for tests).
KEYWORD_BONUS = 0.15
# Agents scoring within this of the best are a close call: the one whose collection holds
# the better match for the task wins, its retrieval evidence (best dense score) added to the
# score at EVIDENCE_WEIGHT. Support and documentation describe the same product, so their
# evidence is close for either kind of question: at full weight it overrode clear card fits
# (a VAT problem sent to the API reference).
EVIDENCE_MARGIN = 0.2
EVIDENCE_WEIGHT = 0.75
# The same rule on the intent classifier's probabilities (a router with examples). With the
# margin and weight above, it overrode the classifier more often than it corrected it: on the
# six routing rounds of benchmarks/router_intent.py (each scored by a router trained on the
# rounds written before it) 0.907 against 0.918 with these, as with no close-call evidence.
INTENT_EVIDENCE_MARGIN = 0.02
INTENT_EVIDENCE_WEIGHT = 0.25
# A task below the similarity threshold is off-topic only if no collection matches it either:
# off-topic tasks ("weather in Paris", "a haiku about autumn") matched no chunk above 0.25,
# terse in-domain ones ("base URL for the US region") 0.35-0.55. All four values were chosen on
# the tuning sets (src/genesis/router/examples.jsonl,
# tests/router/labelled_tasks.jsonl and the off-topic tasks of benchmarks/router_accuracy.py).
OFF_TOPIC_EVIDENCE = 0.3
# Reading a request (leaving pasted code out, matching the rules) is linear in its length:
# microseconds for a question, milliseconds for a page of pasted code. Requests longer than
# this are read in a worker thread, so a long one never holds the event loop.
INLINE_READ_CHARS = 1_000


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
    :meth:`route`), in one call of ``embed_batch`` when given (rows in input order), and read
    from ``card_cache`` instead when it holds them. :meth:`route_async` embeds the task with
    ``embed_async`` when given (a micro-batcher), else with ``embed`` in a worker thread, so
    it never runs a forward pass on the event loop. An agent's similarity to a task is the
    mean of (a) the best cosine over its card texts and (b) the cosine to the centroid of
    those texts; a best similarity below ``threshold`` routes to ``default_agent``. Code
    pasted into a task is left out of what is embedded (see ``request_text``): the request
    around it says what to do with it, its identifiers only look like product topics.

    Patterns state an intent and decide (among several, the closest card wins). Keywords only
    name a topic: with an embedder, an agent's matched keywords add ``KEYWORD_BONUS`` (once)
    to its similarity instead of deciding alone. For the agents within ``EVIDENCE_MARGIN`` of
    the best score, ``evidence`` (when given) reports how well each agent's collection matches
    the task, and that is added to their scores (times ``EVIDENCE_WEIGHT``); with an intent
    classifier (``examples``), ``INTENT_EVIDENCE_MARGIN`` and ``INTENT_EVIDENCE_WEIGHT`` on its
    probabilities. A task below
    ``threshold`` goes to ``default_agent`` only when no collection asked matches it by
    ``OFF_TOPIC_EVIDENCE``.
    """

    def __init__(
        self,
        cards: Sequence[AgentCard],
        *,
        embed: EmbedFn | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        default_agent: str,
        registry: ChatRegistry | None = None,
        embed_batch: EmbedBatchFn | None = None,
        embed_async: AsyncEmbedFn | None = None,
        card_cache: CardEmbeddingCache | None = None,
        evidence: EvidenceFn | None = None,
        examples: Sequence[tuple[str, str]] = (),
    ) -> None:
        _check_cards(cards, default_agent, threshold)
        self._cards = list(cards)
        self._names = [c.name for c in cards]
        self._rules = CompiledRules(cards)
        self._embed = embed
        self._embed_batch = embed_batch
        self._embed_async = embed_async
        self._card_cache = card_cache
        self._threshold = threshold
        self._default = default_agent
        self._registry = registry
        self._evidence = evidence
        self._card_matrix: _F32 | None = None
        self._centroids: _F32 | None = None
        self._card_slices: list[slice] = []
        # Labelled requests (task, agent) for the intent classifier: the given ones and every
        # profile's examples; trained in warm_up (see _intent.py). None given: cards only.
        self._examples = (
            [(t, a) for t, a in examples] + [(x, c.name) for c in cards for x in c.examples]
            if examples
            else []
        )
        self._intent: IntentClassifier | None = None

    @property
    def agents(self) -> list[str]:
        """The agent names, in card order."""
        return list(self._names)

    @property
    def default_agent(self) -> str:
        return self._default

    @property
    def warmed_up(self) -> bool:
        """Whether routing needs no more loading (card vectors in memory, or no embedder)."""
        return self._embed is None or self._card_matrix is not None

    def warm_up(self) -> None:
        """Embed every card's description and examples (once, or read them from
        ``card_cache``); no-op without an embedder."""
        if self._embed is None or self._card_matrix is not None:
            return
        texts: list[str] = []
        slices: list[slice] = []
        for card in self._cards:
            slices.append(slice(len(texts), len(texts) + len(card.texts())))
            texts.extend(card.texts())
        matrix = self._card_cache.load(texts) if self._card_cache is not None else None
        if matrix is None:
            matrix = self._embed_cards(texts)
            if self._card_cache is not None:
                self._card_cache.save(texts, matrix)
            logger.info("router warmed up: %s card texts embedded", len(texts))
        intent = self._train_intent()
        # Assigned only once everything is embedded: a failed warm-up leaves no half state.
        self._intent = intent
        self._centroids = np.stack([_unit(matrix[s].mean(axis=0)) for s in slices])
        self._card_slices = slices
        self._card_matrix = matrix

    def _train_intent(self) -> IntentClassifier | None:
        """The intent classifier over the examples (weights read from ``card_cache`` when it
        holds them), or None with examples of fewer than two agents."""
        if len({agent for _, agent in self._examples}) < 2:
            return None
        tasks = [task for task, _ in self._examples]
        read = [read_request(task) for task in tasks]
        texts = [text for text, _ in read]
        labels = [agent for _, agent in self._examples]
        # The bag's width, the reading and the training steps are in the key: weights of other
        # features or another fit are never read back ("code": the code entry is set whenever
        # code was pasted).
        key = [f"intent-weights-bag{BAG_DIM}-code-steps{STEPS}", *self._names, *labels, *tasks]
        cache = self._card_cache
        stored = cache.load(key, check_rows=False) if cache is not None else None
        if stored is not None and stored.shape[1] == len(self._names):
            return IntentClassifier(self._names, stored)
        vectors = cache.load(texts) if cache is not None else None
        if vectors is None:
            vectors = self._embed_cards(texts)
            if cache is not None:
                cache.save(texts, vectors)
        bags = [bag_of_terms(text, code) for text, code in read]
        features = np.stack([intent_features(v, b) for v, b in zip(vectors, bags, strict=True)])
        intent = IntentClassifier.fit(self._names, features, labels, dense_dims=vectors.shape[1])
        if cache is not None:
            cache.save(key, intent.weights)
        logger.info("router: intent classifier trained on %d examples", len(texts))
        return intent

    def _embed_cards(self, texts: list[str]) -> _F32:
        if self._embed_batch is None:
            return np.stack([self._embed_text(text) for text in texts])
        raw = np.asarray(self._embed_batch(texts), dtype=np.float32)
        if raw.shape[0] != len(texts):
            raise AgentError(f"embed_batch returned {raw.shape[0]} rows for {len(texts)} texts")
        return np.stack([_checked_unit(row, text) for row, text in zip(raw, texts, strict=True)])

    def route(self, task: str, *, agent: str | None = None) -> RouteDecision:
        """Pick the agent for ``task``; ``agent`` (if given) wins but must be known.

        Blocking when the task must be embedded: async callers use :meth:`route_async`.
        """
        explicit = self._explicit_or_check(task, agent)
        if explicit is not None:
            return explicit
        request, hits, bag, code = self._read(task)
        if not self._needs_query(hits):
            return self._decide(hits, None)
        self.warm_up()
        vector = self._embed_text(request)
        sims = self._scores(vector, bag, code)
        close = self._evidence_agents(hits, sims)
        evidence = self._evidence(request, vector, close) if close and self._evidence else {}
        return self._decide(hits, sims, evidence)

    async def route_async(self, task: str, *, agent: str | None = None) -> RouteDecision:
        """:meth:`route` without embedding on the event loop: the task goes to
        ``embed_async`` (or ``embed`` in the CPU executor); a short task's rules run inline
        (microseconds), a long one is read in the CPU executor (``INLINE_READ_CHARS``), and
        so is the retrieval evidence between close agents (a dense search per agent)."""
        explicit = self._explicit_or_check(task, agent)
        if explicit is not None:
            return explicit
        if len(task) <= INLINE_READ_CHARS:
            request, hits, bag, code = self._read(task)
        else:
            request, hits, bag, code = await run_cpu(self._read, task)
        if not self._needs_query(hits):
            return self._decide(hits, None)
        if not self.warmed_up:
            await asyncio.to_thread(self.warm_up)
        vector = await self._embed_task_async(request)
        sims = self._scores(vector, bag, code)
        close = self._evidence_agents(hits, sims)
        evidence: Mapping[str, float] = {}
        if close and self._evidence is not None:
            evidence = await run_cpu(self._evidence, request, vector, close)
        return self._decide(hits, sims, evidence)

    def _read(self, task: str) -> tuple[str, list[RuleHit], _F32, bool]:
        """The text to embed (pasted code left out), the rules ``task`` matches, its bag of
        terms for the intent classifier, and whether code was pasted into it."""
        request, code = read_request(task)
        bag = bag_of_terms(request, code)
        return request, self._rules.match(task, request), bag, code

    def similarities(self, task: str) -> dict[str, float]:
        """Similarity of ``task`` to each agent: mean of best-text and centroid cosine.

        The best single text rewards a close example; the centroid damps one lucky example
        of an otherwise unrelated agent (on the labelled set: 0.81 max-only, 0.89 mixed).
        """
        if self._embed is None:
            raise AgentError("this router has no embedder: similarity routing is off")
        self.warm_up()
        return self._card_scores(self._embed_text(request_text(task)))

    def _card_scores(self, query: _F32) -> dict[str, float]:
        assert self._card_matrix is not None and self._centroids is not None  # see warm_up
        sims = self._card_matrix @ query
        central = self._centroids @ query
        return {
            name: 0.5 * float(sims[s].max()) + 0.5 * float(central[i])
            for i, (name, s) in enumerate(zip(self._names, self._card_slices, strict=True))
        }

    def _scores(self, query: _F32, bag: _F32, code: bool = False) -> Scores:
        """The agents' scores for a request: the intent classifier's probabilities when there
        is one, else the card similarity; ``cosine`` is the best card similarity either way
        (what the threshold for off-topic requests is measured against)."""
        cards = self._card_scores(query)
        intent = self._intent
        scores = intent.probabilities(intent_features(query, bag)) if intent is not None else cards
        return Scores(scores, cosine=max(cards.values()), code=code)

    async def _embed_task_async(self, task: str) -> _F32:
        if self._embed_async is None:
            return await run_cpu(self._embed_text, task)
        vec = np.asarray(await self._embed_async(task), dtype=np.float32).reshape(-1)
        return _checked_unit(vec, task)

    def _explicit_or_check(self, task: str, agent: str | None) -> RouteDecision | None:
        if agent is not None:
            self._check_known(agent)
            return RouteDecision(agent, 1.0, "explicit agent", "explicit")
        if not isinstance(task, str):
            raise AgentError(f"a task to route must be text, not {type(task).__name__}")
        if not task or not task.strip():
            raise AgentError("cannot route an empty task: give the task text or an agent name")
        return None

    def _needs_query(self, hits: list[RuleHit]) -> bool:
        """Whether the decision needs the task's embedding: unless one agent's pattern
        (an intent) matched and no other agent's pattern did."""
        if self._embed is None:
            return False
        intents = [h for h in hits if h.patterns]
        if not intents:
            return True
        top = max(h.strength for h in intents)
        return sum(h.strength == top for h in intents) > 1

    def _decide(
        self,
        hits: list[RuleHit],
        sims: dict[str, float] | None,
        evidence: Mapping[str, float] | None = None,
    ) -> RouteDecision:
        intents = [h for h in hits if h.patterns]
        if sims is None or intents:
            # Without an embedder rules decide alone; a pattern (an intent) outranks keywords.
            if hits:
                return self._by_rules(intents or hits, sims)
            return self._by_similarity(sims)
        scores = _with_keywords(sims, hits)
        best = _best_with_evidence(scores, evidence or {}, self._evidence_rule()[1])
        if hits and best == self._rule_winner(hits, scores):
            return self._by_rules(hits, scores)
        if self._below_threshold(hits, sims):
            matched = max((evidence or {}).values(), default=None)
            if matched is None or matched < OFF_TOPIC_EVIDENCE:
                return self._by_similarity(sims)  # off-topic: the default agent
        return self._similarity_decision(best, sims, hits, evidence or {})

    def _below_threshold(self, hits: list[RuleHit], sims: dict[str, float]) -> bool:
        """Whether the request may be off-topic: no rule matched and no card is similar
        enough. A request with pasted code is not ("Anything off here?" above a function
        says little, the code says which agents it is for)."""
        if isinstance(sims, Scores) and sims.code:
            return False
        return not hits and _cosine(sims) < self._threshold

    def _evidence_agents(self, hits: list[RuleHit], sims: dict[str, float]) -> list[str]:
        """Whose retrieval evidence to ask for: a close call's agents; for a task below the
        threshold at least the closest agent (is the task off-topic, or only tersely put?)."""
        close = self._close_call(hits, sims)
        if close or not self._below_threshold(hits, sims):
            return close
        return [max(sims, key=lambda name: sims[name])]

    def _close_call(self, hits: list[RuleHit], sims: dict[str, float]) -> list[str]:
        """The agents scoring within the evidence margin of the best, when there are several."""
        if any(h.patterns for h in hits):
            return []
        scores = _with_keywords(sims, hits)
        best = max(scores.values())
        margin = self._evidence_rule()[0]
        close = [name for name, score in scores.items() if best - score < margin]
        return close if len(close) > 1 else []

    def _evidence_rule(self) -> tuple[float, float]:
        """The close-call margin and the evidence's weight, on the scale of the scores."""
        if self._intent is not None:
            return INTENT_EVIDENCE_MARGIN, INTENT_EVIDENCE_WEIGHT
        return EVIDENCE_MARGIN, EVIDENCE_WEIGHT

    def _rule_winner(self, hits: list[RuleHit], scores: dict[str, float]) -> str:
        top = max(h.strength for h in hits)
        return max((h for h in hits if h.strength == top), key=lambda h: scores[h.agent]).agent

    def _similarity_decision(
        self,
        best: str,
        sims: dict[str, float],
        hits: list[RuleHit],
        evidence: Mapping[str, float],
    ) -> RouteDecision:
        sim = sims[best]
        what = "intent" if self._intent is not None else "similarity"
        reason = f"{what} {sim:.2f} to {best!r}"
        if best in evidence and _cosine(sims) < self._threshold:
            reason += f" (below the threshold, but its collection matched: {evidence[best]:.2f})"
        elif best in evidence:
            reason += f" (close call; its collection matched best: {evidence[best]:.2f})"
        if hits:
            keyword_agents = ", ".join(h.agent for h in hits if h.agent != best)
            if keyword_agents:
                reason += f"; keywords of {keyword_agents} were outweighed"
        return RouteDecision(best, min(max(sim, 0.0), 1.0), reason, "similarity", sims)

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

    def _by_rules(self, hits: list[RuleHit], sims: dict[str, float] | None) -> RouteDecision:
        scores = {h.agent: h.strength for h in hits}
        top = max(scores.values())
        tied = [h for h in hits if h.strength == top]
        winner = tied[0]
        if len(tied) > 1 and sims is not None:
            # Rules cannot separate these agents; let the task's meaning decide among them.
            winner = max(tied, key=lambda h: sims[h.agent])
        confidence = top / sum(scores.values())
        reason = f"rule: {winner.describe()}"
        if len(tied) > 1:
            reason += f" (tied with {', '.join(h.agent for h in tied if h is not winner)})"
        return RouteDecision(winner.agent, confidence, reason, "rule", scores)

    def _by_similarity(self, scores: dict[str, float] | None) -> RouteDecision:
        if scores is None:
            reason = "default: no rule matched and no embedder is configured"
            return RouteDecision(self._default, 0.0, reason, "default")
        best = max(scores, key=lambda name: scores[name])
        sim = scores[best]
        if _cosine(scores) < self._threshold:
            reason = (
                f"default: best similarity {_cosine(scores):.2f} below threshold"
                f" {self._threshold:.2f} (best was {best!r})"
            )
            return RouteDecision(self._default, 0.0, reason, "default", scores)
        what = "intent" if self._intent is not None else "similarity"
        reason = f"{what} {sim:.2f} to {best!r}"
        return RouteDecision(best, min(max(sim, 0.0), 1.0), reason, "similarity", scores)

    def _embed_text(self, text: str) -> _F32:
        assert self._embed is not None
        return _checked_unit(np.asarray(self._embed(text), dtype=np.float32).reshape(-1), text)


class Scores(dict[str, float]):
    """Each agent's score for a request, and the request's best card similarity (``cosine``),
    which the off-topic threshold is measured against whatever the scores are; ``code``:
    code was pasted into the request."""

    def __init__(self, scores: Mapping[str, float], *, cosine: float, code: bool = False) -> None:
        super().__init__(scores)
        self.cosine = cosine
        self.code = code


def _cosine(sims: Mapping[str, float]) -> float:
    return sims.cosine if isinstance(sims, Scores) else max(sims.values())


def _with_keywords(sims: dict[str, float], hits: list[RuleHit]) -> dict[str, float]:
    bonus = {h.agent: KEYWORD_BONUS for h in hits if h.keywords}
    return {name: sim + bonus.get(name, 0.0) for name, sim in sims.items()}


def _best_with_evidence(
    scores: dict[str, float], evidence: Mapping[str, float], weight: float
) -> str:
    """The best agent; in a close call, retrieval evidence (when measured) counts too, at
    ``weight``."""
    first = max(scores, key=lambda name: scores[name])
    close = [name for name in evidence if name in scores]
    if len(close) < 2:
        return first
    return max(close, key=lambda name: scores[name] + weight * evidence[name])


def _unit(vec: _F32) -> _F32:
    return vec / np.float32(np.linalg.norm(vec))


def _checked_unit(vec: _F32, text: str) -> _F32:
    if not np.any(vec):
        raise AgentError(f"the embedder returned a zero vector for {text[:60]!r}")
    return _unit(vec)


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
