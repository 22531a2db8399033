"""Prompt assembly in token space, with an exact token budget and no retokenization drift.

Layout (every piece one segment in :mod:`genesis.tokens._segments` normal form)::

    {system}
    Context:
    [1]
    {source} — {heading}
    {chunk text}
    [2]
    ...
    Conversation so far:          (only with history; see genesis.rag._history for why here)
    User: ... / Assistant: ...    (one segment per turn, newest turns that fit)
    Question: {query}
    Answer:

The system piece, the context header and the citation markers are tokenized once
(:meth:`PromptAssembler.warm_up`); chunk segments come from the token cache (they hold no
citation number, so one cached entry serves every request and position); only the question
segment (question prefix, query and answer prefix, a few tokens more than the query) is
tokenized per request. The answer prefix rides in the question segment on purpose: the user's
text then never sits at a segment boundary, so no query can make the segment encoder refuse
it (a literal special token such as ``</s>`` at a boundary would).

Chunks are picked in rank order while they fit and then laid out in a stable order (source,
ordinal), so an inference server's prefix cache sees the same prefix for the same set of
chunks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from genesis._executor import run_cpu
from genesis.errors import PromptBudgetError
from genesis.knowledge._types import Chunk
from genesis.llm._types import Message
from genesis.rag._history import HISTORY_SHARE, Turn, pick_recent
from genesis.tokens._protocol import TokenIds, as_token_ids
from genesis.tokens._segments import SegmentEncoder, normalize_segment

logger = logging.getLogger(__name__)
# Questions whose segment IDs the assembler keeps (one question is assembled per collection).
_QUERY_IDS_KEPT = 256

_SEGMENT_MEMO = 4096  # chunk segment texts kept (a few MB at most)
# Prompts longer than this are built in the CPU executor. Measured here: building (concatenate,
# segments, text) takes ~12 us for 2,500 tokens, ~32 us for 10k and ~240 us for 50k, while an
# executor hop costs ~50-100 us: below this size the hop would cost more than it frees.
_INLINE_BUILD_TOKENS = 32_768

DEFAULT_SYSTEM = (
    "You answer questions using only the numbered context passages below. "
    "Cite the passages you use as [n]. If the context does not contain the answer, say so."
)


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """The fixed text of a RAG prompt.

    ``marker_format`` (with ``{n}``) is the citation marker line before each chunk;
    ``chunk_header_format`` (``{source}``, ``{heading}``) opens each chunk segment and must not
    hold ``{n}``: a cached chunk segment cannot depend on its position in the prompt.
    ``chunk_header_no_heading`` is used for chunks without a heading.
    """

    system: str = DEFAULT_SYSTEM
    context_header: str = "Context:"
    marker_format: str = "[{n}]"
    chunk_header_format: str = "{source} — {heading}"
    chunk_header_no_heading: str = "{source}"
    question_prefix: str = "Question:"
    answer_prefix: str = "Answer:"
    history_header: str = "Conversation so far:"
    max_markers: int = 50

    def __post_init__(self) -> None:
        if "{n}" not in self.marker_format:
            raise ValueError(f"marker_format {self.marker_format!r} must contain '{{n}}'")
        for name in ("chunk_header_format", "chunk_header_no_heading"):
            if "{n}" in getattr(self, name):
                raise ValueError(f"{name} must not contain '{{n}}': chunk segments are cached")
        for name in (
            "system",
            "context_header",
            "question_prefix",
            "answer_prefix",
            "history_header",
        ):
            # An empty answer prefix would put the user's text at a segment boundary.
            if not getattr(self, name).strip():
                raise ValueError(f"PromptTemplate.{name} is empty")
        for name in ("chunk_header_format", "chunk_header_no_heading"):
            try:
                getattr(self, name).format(source="s", heading="h")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"PromptTemplate.{name} may use only {{source}} and {{heading}}: {exc!r}"
                ) from None
        if self.max_markers < 1:
            raise ValueError(f"max_markers must be >= 1, got {self.max_markers}")


@dataclass(frozen=True, slots=True)
class PromptSegment:
    """One piece of an assembled prompt: ``ids[start:start + length]`` encode ``text``."""

    name: str
    start: int
    length: int
    text: str


@dataclass(frozen=True, slots=True)
class IncludedChunk:
    """A chunk in the prompt, its citation number and whether the budget cut it short."""

    number: int
    chunk: Chunk
    tokens: int
    truncated: bool = False


@dataclass(slots=True)
class AssembledPrompt:
    """A prompt in token space.

    ``tokenizer.encode(text) == ids`` holds whenever ``truncated`` is False (no drift); when
    the budget cut the only chunk short, ``text`` is the decode of ``ids`` (what was sent)
    and drift-freedom is not guaranteed. ``token_counts`` has ``system``, ``template`` (all
    fixed pieces, system included), ``chunks``, ``history`` and ``query``; template + chunks
    + history + query == ``len(ids)``. ``history_turns`` turns of the conversation are in it
    (the newest ones), ``history_dropped`` older ones were left out.
    """

    ids: TokenIds
    text: str
    included: list[IncludedChunk]
    dropped: list[Chunk]
    segments: list[PromptSegment]
    token_counts: dict[str, int]
    truncated: bool = False
    budget_tokens: int = 0
    system_text: str = field(default="", repr=False)
    history_turns: int = 0
    history_dropped: int = 0
    history_kept: list[int] = field(default_factory=list)  # indexes into the history given


@dataclass(frozen=True, slots=True)
class _Piece:
    name: str
    ids: TokenIds
    text: str
    kind: str  # "system" | "template" | "chunk" | "history" | "query"


class PromptAssembler:
    """Assembles prompts from pre-tokenized pieces; see the module docstring for the layout.

    ``encoder`` must be the same :class:`SegmentEncoder` the token cache uses for chunks.
    """

    def __init__(self, encoder: SegmentEncoder, template: PromptTemplate | None = None) -> None:
        self._encoder = encoder
        self._template = template or PromptTemplate()
        self._fixed: dict[str, _Piece] = {}
        self._markers: dict[int, _Piece] = {}
        self._warm = asyncio.Lock()
        # (chunk id, content hash, heading) -> segment text: the pipeline (cache keys) and
        # the layout (prompt text) both need it for every chunk of every request.
        self._segment_texts: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        # Question segment -> its IDs: a routed question is assembled once per collection
        # weighed (`genesis.rag.TokenCachedRAG.answer`), so it is tokenized once.
        self._query_ids: OrderedDict[str, TokenIds] = OrderedDict()

    @property
    def template(self) -> PromptTemplate:
        return self._template

    @property
    def encoder(self) -> SegmentEncoder:
        return self._encoder

    async def warm_up(self) -> None:
        """Tokenize every fixed piece once (called lazily by :meth:`assemble` otherwise).

        Concurrent first calls wait for one warm-up; the pieces become visible together."""
        async with self._warm:
            if self._fixed:
                return
            t = self._template
            [system] = await self._encoder.encode_first([normalize_segment(t.system)])
            fixed = {"system": _Piece("system", system, normalize_segment(t.system), "system")}
            fixed.update(
                await self._encode_fixed({"context": t.context_header, "history": t.history_header})
            )
            await self._add_markers(range(1, t.max_markers + 1))
            self._fixed = fixed
        logger.debug("prompt template tokenized: %d markers", len(self._markers))

    def chunk_segment_text(self, chunk: Chunk) -> str:
        """The normalised text of ``chunk``'s segment: header line and chunk text.

        This is what the token cache stores IDs for; it holds no citation number.
        """
        key = (chunk.id, chunk.hash, chunk.heading)
        text = self._segment_texts.get(key)
        if text is not None:
            self._segment_texts.move_to_end(key)
            return text
        t = self._template
        fmt = t.chunk_header_format if chunk.heading.strip() else t.chunk_header_no_heading
        header = fmt.format(source=chunk.source, heading=chunk.heading.strip())
        text = normalize_segment(f"{header}\n{chunk.text}")
        self._segment_texts[key] = text
        if len(self._segment_texts) > _SEGMENT_MEMO:
            self._segment_texts.popitem(last=False)
        return text

    def query_segment_text(self, query: str) -> str:
        """The normalised question segment for ``query``, answer prefix included."""
        t = self._template
        return normalize_segment(f"{t.question_prefix} {query.strip()}\n{t.answer_prefix}")

    async def assemble(
        self,
        query: str,
        chunks: Sequence[Chunk],
        chunk_ids: Sequence[TokenIds],
        *,
        budget_tokens: int,
        history: Sequence[Turn] = (),
        history_ids: Sequence[TokenIds] = (),
    ) -> AssembledPrompt:
        """Assemble ``query`` and ``chunks`` (in rank order) into at most ``budget_tokens``.

        ``history`` (oldest first) with ``history_ids[i]`` the :class:`SegmentEncoder` IDs of
        ``history[i].segment_text()``: the newest turns that fit in ``HISTORY_SHARE`` of the
        room left after the system prompt and the question go in, oldest dropped first,
        counted exactly in tokens; the chunks get the rest.

        ``chunk_ids[i]`` are the :class:`SegmentEncoder` IDs of ``chunk_segment_text(chunks[i])``.
        Chunks are taken in rank order while they fit (a chunk that does not fit is dropped
        whole, with every chunk ranked below it), then laid out by (source, ordinal). When not
        even the first chunk fits, a prefix of its IDs is included and the prompt is marked
        ``truncated``. Raises ``PromptBudgetError`` when the fixed pieces and the query alone
        exceed the budget, ``ValueError`` on an empty query or mismatched inputs.
        """
        _check_inputs(query, chunks, chunk_ids, budget_tokens)
        if len(history) != len(history_ids):
            raise ValueError(f"{len(history)} turns but {len(history_ids)} token ID arrays")
        if not self._fixed:
            await self.warm_up()
        query_text = self.query_segment_text(query)
        query_ids = await self._encode_query(query_text)
        room = self._room(budget_tokens, len(query_ids))
        header = len(self._fixed["history"].ids)
        kept, used = pick_recent(history_ids, int(room * HISTORY_SHARE), header)
        picked, truncated = await self._select(chunks, chunk_ids, room - used)
        ordered = _stable_order(picked)
        turns = [
            _Piece(f"turn:{i}", as_token_ids(history_ids[i]), history[i].segment_text(), "history")
            for i in kept
        ]
        query_piece = _Piece("query", query_ids, query_text, "query")
        pieces = await self._layout(ordered, query_piece, turns)
        prompt = await self._build(pieces, ordered, chunks, budget_tokens, truncated)
        prompt.history_turns, prompt.history_dropped = len(kept), len(history) - len(kept)
        prompt.history_kept = kept
        return prompt

    async def _encode_query(self, text: str) -> TokenIds:
        """The IDs of a question segment, kept for the last _QUERY_IDS_KEPT questions."""
        ids = self._query_ids.get(text)
        if ids is None:
            [ids] = await self._encoder.encode_batch([text])
            self._query_ids[text] = ids
            while len(self._query_ids) > _QUERY_IDS_KEPT:
                self._query_ids.popitem(last=False)
        else:
            self._query_ids.move_to_end(text)
        return ids

    def messages(self, assembled: AssembledPrompt) -> list[Message]:
        """The prompt as chat messages: the system piece, then the rest as the user's turn.

        The answer prefix is left out of the user message (a chat model answers anyway).
        """
        user = "".join(s.text for s in assembled.segments if s.name != "system").rstrip()
        user = user.removesuffix(self._template.answer_prefix.strip())
        return [
            Message("system", assembled.system_text.strip()),
            Message("user", user.strip()),
        ]

    async def _encode_fixed(self, texts: dict[str, str]) -> dict[str, _Piece]:
        normalised = {name: normalize_segment(text) for name, text in texts.items()}
        encoded = await self._encoder.encode_batch(list(normalised.values()))
        return {
            name: _Piece(name, ids, text, "template")
            for (name, text), ids in zip(normalised.items(), encoded, strict=True)
        }

    async def _add_markers(self, numbers: Sequence[int]) -> None:
        fmt = self._template.marker_format
        texts = [normalize_segment(fmt.format(n=n)) for n in numbers]
        encoded = await self._encoder.encode_batch(texts)
        for n, text, ids in zip(numbers, texts, encoded, strict=True):
            self._markers[n] = _Piece(f"marker:{n}", ids, text, "template")

    async def _marker(self, n: int) -> _Piece:
        if n not in self._markers:  # past max_markers: tokenize once, keep
            await self._add_markers([n])
        return self._markers[n]

    def _room(self, budget: int, query_tokens: int) -> int:
        """Tokens left for the context (header, markers, chunks) after the fixed parts."""
        fixed = len(self._fixed["system"].ids)
        if fixed + query_tokens > budget:
            raise PromptBudgetError(
                f"the system prompt ({fixed} tokens) and the question ({query_tokens} tokens) "
                f"need {fixed + query_tokens} tokens, over the budget of {budget}"
            )
        return budget - fixed - query_tokens

    async def _select(
        self, chunks: Sequence[Chunk], chunk_ids: Sequence[TokenIds], room: int
    ) -> tuple[list[tuple[Chunk, TokenIds]], bool]:
        """Pick chunks in rank order while they fit ``room``; the cost is exact in tokens.

        The k chosen chunks get markers 1..k in some order, so their marker cost is the sum
        of the first k marker lengths whatever the final order.
        """
        used = len(self._fixed["context"].ids) if chunks else 0
        picked: list[tuple[Chunk, TokenIds]] = []
        for chunk, ids in zip(chunks, chunk_ids, strict=True):
            cost = len((await self._marker(len(picked) + 1)).ids) + len(ids)
            if used + cost > room:
                break
            picked.append((chunk, as_token_ids(ids)))
            used += cost
        if picked or not chunks:
            return picked, False
        return await self._truncate_first(chunks[0], as_token_ids(chunk_ids[0]), room)

    async def _truncate_first(
        self, chunk: Chunk, ids: TokenIds, room: int
    ) -> tuple[list[tuple[Chunk, TokenIds]], bool]:
        overhead = len(self._fixed["context"].ids) + len((await self._marker(1)).ids)
        keep = room - overhead
        if keep <= 0:
            return [], False
        logger.info("budget cuts chunk %s to %d of %d tokens", chunk.id, keep, len(ids))
        return [(chunk, ids[:keep])], True

    async def _layout(
        self, ordered: list[tuple[Chunk, TokenIds]], query: _Piece, turns: Sequence[_Piece] = ()
    ) -> list[_Piece]:
        pieces = [self._fixed["system"]]
        if ordered:
            pieces.append(self._fixed["context"])
        for n, (chunk, ids) in enumerate(ordered, start=1):
            pieces.append(await self._marker(n))
            pieces.append(_Piece(f"chunk:{n}", ids, self.chunk_segment_text(chunk), "chunk"))
        if turns:
            pieces += [self._fixed["history"], *turns]
        return [*pieces, query]

    async def _build(
        self,
        pieces: list[_Piece],
        ordered: list[tuple[Chunk, TokenIds]],
        chunks: Sequence[Chunk],
        budget: int,
        truncated: bool,
    ) -> AssembledPrompt:
        text: str | None = None
        if truncated:  # one short chunk: decode it and the whole prompt (executor hops)
            pieces = [await self._decoded(p) if p.kind == "chunk" else p for p in pieces]
            text = await self._encoder.decode(np.concatenate([p.ids for p in pieces]))
        if sum(len(p.ids) for p in pieces) > _INLINE_BUILD_TOKENS:
            return await run_cpu(self._finish, pieces, text, ordered, chunks, budget, truncated)
        return self._finish(pieces, text, ordered, chunks, budget, truncated)

    def _finish(
        self,
        pieces: list[_Piece],
        text: str | None,
        ordered: list[tuple[Chunk, TokenIds]],
        chunks: Sequence[Chunk],
        budget: int,
        truncated: bool,
    ) -> AssembledPrompt:
        """The prompt from its pieces (blocking; long prompts run it in the executor)."""
        ids = np.concatenate([p.ids for p in pieces]).astype(np.uint32, copy=False)
        segments, counts = _segments(pieces)
        if text is None:
            text = "".join(p.text for p in pieces)
        return AssembledPrompt(
            ids=ids,
            text=text,
            included=[
                IncludedChunk(n, chunk, len(chunk_ids), truncated)
                for n, (chunk, chunk_ids) in enumerate(ordered, start=1)
            ],
            dropped=_dropped(chunks, ordered),
            segments=segments,
            token_counts=counts,
            truncated=truncated,
            budget_tokens=budget,
            system_text=self._fixed["system"].text,
        )

    async def _decoded(self, piece: _Piece) -> _Piece:
        return _Piece(piece.name, piece.ids, await self._encoder.decode(piece.ids), piece.kind)


def _check_inputs(
    query: str, chunks: Sequence[Chunk], chunk_ids: Sequence[TokenIds], budget_tokens: int
) -> None:
    if not query.strip():
        raise ValueError("query is empty")
    if len(chunks) != len(chunk_ids):
        raise ValueError(f"{len(chunks)} chunks but {len(chunk_ids)} token ID arrays")
    if budget_tokens <= 0:
        raise ValueError(f"budget_tokens must be positive, got {budget_tokens}")


def _segments(pieces: list[_Piece]) -> tuple[list[PromptSegment], dict[str, int]]:
    segments: list[PromptSegment] = []
    counts = {"system": 0, "template": 0, "chunks": 0, "history": 0, "query": 0}
    start = 0
    for piece in pieces:
        segments.append(PromptSegment(piece.name, start, len(piece.ids), piece.text))
        start += len(piece.ids)
        counts["chunks" if piece.kind == "chunk" else piece.kind] += len(piece.ids)
    # "template" counts every pre-tokenized fixed piece, the system piece included.
    counts["template"] += counts["system"]
    return segments, counts


def _stable_order(picked: list[tuple[Chunk, TokenIds]]) -> list[tuple[Chunk, TokenIds]]:
    """Prompt order: by (source, ordinal), never by score, so equal sets give equal prefixes."""
    return sorted(picked, key=lambda p: (p[0].source, p[0].ordinal, p[0].id))


def _dropped(chunks: Sequence[Chunk], picked: list[tuple[Chunk, TokenIds]]) -> list[Chunk]:
    """Chunks left out whole (a truncated chunk counts as included)."""
    kept = {id(chunk) for chunk, _ in picked}
    return [c for c in chunks if id(c) not in kept]
