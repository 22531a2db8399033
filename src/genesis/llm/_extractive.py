"""The offline default answerer: the best sentences of the retrieved chunks, with citations.

No model is involved, and the answer says so. Sentences are scored by lexical overlap with
the query: lower-cased words, stop words removed, crude suffix stripping so "caching" meets
"cache", each matched term weighted by an idf computed over the candidate sentences (a word
every sentence has tells nothing).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from genesis._executor import run_cpu
from genesis.errors import LLMBadRequestError
from genesis.llm._types import Citation, Generation, GenerationRequest, Usage

PREFIX = "Extractive answer (no LLM configured; quoted from the retrieved sources):"
NOTHING_FOUND = (
    "Extractive answer (no LLM configured): I found nothing relevant to this question "
    "in the knowledge base."
)
MAX_SENTENCES = 4
MIN_SENTENCES = 2
# A sentence scoring under this share of the best one is dropped once MIN_SENTENCES are kept.
_RELATIVE_CUTOFF = 0.35
_MIN_CHARS, _MAX_CHARS = 15, 600

_STOP_WORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just me more
    most my no nor not now of off on once only or other our out over own same she should so some
    such than that the their them then there these they this those through to too under until
    up very was we were what when where which while who whom why will with would you your yours
    use used using get one two may might must need via per""".split()
)
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(\[])")
_FENCE = re.compile(r"```.*?```", re.DOTALL)
_MARKUP = re.compile(r"^\s*(?:[-*+]\s+|\d+\.\s+|>\s*)")
_HEADING = re.compile(r"^\s*#{1,6}\s")


@dataclass(frozen=True, slots=True)
class _Sentence:
    context: int  # index into request.context_texts
    position: int  # index of the sentence within its context
    text: str
    terms: frozenset[str]


class ExtractiveBackend:
    """Answers from ``request.context_texts`` without any model (``Generation.extractive``)."""

    @property
    def name(self) -> str:
        return "extractive"

    async def generate(self, request: GenerationRequest) -> Generation:
        """`extractive_answer` in the CPU executor (sentence scoring is pure Python)."""
        return await run_cpu(extractive_answer, request)

    async def aclose(self) -> None:
        return None


def extractive_answer(request: GenerationRequest) -> Generation:
    """The synchronous core of :class:`ExtractiveBackend` (pure; no I/O)."""
    generation = _extract(request)
    return cut_at_stop(generation, request.stop)


def cut_at_stop(generation: Generation, stop: Sequence[str]) -> Generation:
    """``generation`` with its text ended before the first stop sequence, if any occurs."""
    cuts = [i for i in (generation.text.find(s) for s in stop if s) if i >= 0]
    if not cuts:
        return generation
    generation.text = generation.text[: min(cuts)]
    generation.finish_reason = "stop"
    return generation


def _extract(request: GenerationRequest) -> Generation:
    numbers = _citation_numbers(request)
    chosen = select_sentences(request.query, request.context_texts)
    if not chosen:
        return _generation(request, NOTHING_FOUND, [])
    parts = [f"{s.text} [{numbers[s.context]}]" for s in chosen]
    quoted = sorted({s.context for s in chosen})
    citations = [request.contexts[i] for i in quoted] if request.contexts else []
    return _generation(request, f"{PREFIX} " + " ".join(parts), citations)


def select_sentences(query: str, contexts: Sequence[str]) -> list[_Sentence]:
    """The 2-4 sentences that best match ``query``, in prompt order (context, position)."""
    sentences = [s for i, text in enumerate(contexts) for s in _sentences(i, text)]
    query_terms = set(terms(query))
    if not sentences or not query_terms:
        return []
    idf = _idf(sentences)
    scored = [(_score(s, query_terms, idf), s) for s in sentences]
    ranked = sorted(
        (p for p in scored if p[0] > 0), key=lambda p: (-p[0], p[1].context, p[1].position)
    )
    kept = _keep_best(ranked)
    return sorted(kept, key=lambda s: (s.context, s.position))


def terms(text: str) -> list[str]:
    """Lower-cased, stop-word-free, crudely stemmed words of ``text``."""
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP_WORDS]


def _stem(word: str) -> str:
    # Lemma-lite: enough to match "caches"/"caching"/"cached" with "cache"; never below 3 chars.
    for suffix in ("ingly", "edly", "ing", "ies", "ed", "es", "ly", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def _sentences(context: int, text: str) -> list[_Sentence]:
    prose = _FENCE.sub(" ", text)  # code blocks are not quotable sentences
    out: list[_Sentence] = []
    # Headings and questions restate the query; they are never the answer.
    lines = (_clean(b) for b in prose.split("\n") if not _HEADING.match(b))
    for line in (ln for ln in lines if ln):
        for piece in _SENTENCE_END.split(line):
            piece = piece.strip()
            words = frozenset(terms(piece))
            if _MIN_CHARS <= len(piece) <= _MAX_CHARS and words and not piece.endswith("?"):
                out.append(_Sentence(context, len(out), piece, words))
    return out


def _clean(line: str) -> str:
    return _MARKUP.sub("", line).strip()


def _idf(sentences: Sequence[_Sentence]) -> dict[str, float]:
    df = Counter(t for s in sentences for t in s.terms)
    n = len(sentences)
    return {t: math.log(1.0 + n / count) for t, count in df.items()}


def _score(sentence: _Sentence, query_terms: set[str], idf: dict[str, float]) -> float:
    matched = sum(idf[t] for t in query_terms & sentence.terms)
    # Mild length normalisation: a long sentence matches more words by chance.
    return matched / (1.0 + 0.05 * len(sentence.terms))


def _keep_best(ranked: list[tuple[float, _Sentence]]) -> list[_Sentence]:
    if not ranked:
        return []
    best = ranked[0][0]
    kept: list[_Sentence] = []
    seen: set[str] = set()
    for score, sentence in ranked:
        key = sentence.text.lower()
        if key in seen:
            continue
        if len(kept) >= MIN_SENTENCES and score < _RELATIVE_CUTOFF * best:
            break
        kept.append(sentence)
        seen.add(key)
        if len(kept) == MAX_SENTENCES:
            break
    return kept


def _citation_numbers(request: GenerationRequest) -> list[int]:
    if not request.contexts:
        return list(range(1, len(request.context_texts) + 1))
    if len(request.contexts) != len(request.context_texts):
        raise LLMBadRequestError(
            f"request.contexts has {len(request.contexts)} citations but context_texts has "
            f"{len(request.context_texts)} texts; they must pair up one to one"
        )
    return [c.number for c in request.contexts]


def _generation(request: GenerationRequest, text: str, citations: list[Citation]) -> Generation:
    prompt_tokens = len(request.prompt_ids) if request.prompt_ids is not None else 0
    return Generation(
        text=text,
        model="extractive",
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=0),
        citations=citations,
        extractive=True,
    )
