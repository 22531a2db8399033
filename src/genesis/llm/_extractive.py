"""The offline default answerer: the best sentences of the retrieved chunks, with citations.

No model is involved, and the answer says so. Candidate sentences are prose, and each row of
a Markdown table as one sentence in words ("Event: `invoice.voided`; Sent when: An invoice is
voided", the header's names with the row's cells; never the raw ``| a | b |`` row); for a
question about a code sample ("In the Python quickstart, ...", see `asks_about_code`), also
each line of the chunks' code blocks, as one inline code span. Fence lines (and the fence
debris a chunk boundary leaves), table separators, front matter, headings and questions are
never quoted. Each sentence is scored by

- semantic similarity to the question (MiniLM cosine; given by the caller, see
  `genesis.rag` which embeds the sentences, or absent),
- lexical overlap: the idf-weighted share of the question's terms the sentence contains
  (lower-cased words, stop words removed, crude suffix stripping so "caching" meets "cache";
  idf over the candidate sentences, so a word every sentence has tells nothing),
- position: earlier chunks (better retrieval rank) and earlier sentences weigh a little more
  when there is no semantic score,
- answer type: a question asking for a quantity ("how long", "how many", "what is the
  maximum") favours sentences that state a number; with a semantic score, also a question
  asking for an endpoint, a place in the dashboard, a prefix, a name, a time or an error code
  favours sentences that hold one (see `_ANSWER_TYPES`).

With a semantic score, the signals are combined by `RANKER`: a logistic model over
`RANK_FEATURES` (the ones above, how relevant the sentence's chunk is, and how far the
sentence falls behind the best similarity and overlap among the candidates), fitted by
``benchmarks/sentence_ranker.py`` on the tuning split of the labelled questions: a sentence
is a positive when it holds one of the question's expected facts. Without one, lexical overlap
and position.

The answer quotes the best sentences, best first, without near-duplicates.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from genesis._executor import run_cpu
from genesis.errors import LLMBadRequestError
from genesis.llm._types import Citation, Generation, GenerationRequest, Quote, Usage

PREFIX = "Extractive answer (no LLM configured; quoted from the retrieved sources):"
NOTHING_FOUND = (
    "Extractive answer (no LLM configured): I found nothing relevant to this question "
    "in the knowledge base."
)
# At most this many quoted sentences. `benchmarks/sentence_ranker.py` (held out by written
# split, on the 645 answerable tuning questions whose chunks hold their facts): 4 quotes the
# facts for 0.923 of them at 2.72 sentences an answer, 3 for 0.895 at 2.45, 5 for 0.924.
MAX_SENTENCES = 4
MIN_SENTENCES = 2
# Past MIN_SENTENCES, a sentence scoring under this share of the best one is left out.
_RELATIVE_CUTOFF = 0.65
_MIN_CHARS, _MAX_CHARS = 15, 600
# Weights of the signals without a semantic score (lexical overlap and position).
LEXICAL_WEIGHT, POSITION_WEIGHT = 0.9, 0.1
# Two sentences with this Jaccard overlap of their terms say the same thing: one is enough.
_NEAR_DUPLICATE = 0.6
# Chunk texts whose sentences are kept split (a few MB at most).
_PARTS_CACHE = 8192

_STOP_WORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just me more
    most my no nor not now of off on once only or other our out over own same she should so some
    such than that the their them then there these they this those through to too under until
    up very was we were what when where which while who whom why will with would you your yours
    use used using get one two may might must need via per
    many much long still often way able want like please help tell know let make thing things
    anything something possible yes there's what's i'm going""".split()
)
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(\[])")
_FENCE_LINE = re.compile(r"^\s*(```|~~~)")
_MARKUP = re.compile(r"^\s*(?:[-*+]\s+|\d+\.\s+|>\s*)")
_HEADING = re.compile(r"^\s*(#{1,6}\s|={3,}\s*$|-{3,}\s*$)")
_TABLE_ROW = re.compile(r"^\s*\||\|.*\|")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
# A question about a code sample: its answer may be a line of the sample itself.
_ASKS_CODE = re.compile(
    r"\b(samples?|examples?|snippets?|quickstart|scripts?|python|javascript|node\.js|curl)\b"
    r"|\w\(\)",
    re.I,
)
# A code line worth quoting: this long, and with a word in it (not a lone brace or bracket).
_CODE_CHARS = (8, 200)
_CODE_WORD = re.compile(r"[A-Za-z_]{2,}")
_INDENTED_CODE = re.compile(r"^( {4}|\t)")
_ASKS_QUANTITY = re.compile(
    r"\b(how\s+(many|much|long|often|quickly|soon|big|large)|when|what\s+(is|are)\s+the\s+"
    r"(maximum|minimum|max|min|default|longest|shortest|limit|price|cost|fee))\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d")
# Added to a sentence that states a number when the question asks for a quantity (without a
# semantic score; with one, `RANKER` weighs it).
NUMBER_BONUS = 0.1
# What a question asks for, and what a sentence that answers it holds: an endpoint ("which
# API call"), a place in the dashboard (a menu path with arrows), an ID prefix, a name (a
# field, an event, an exception: a code span), a time, an error code.
_ANSWER_TYPES: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = (
    (
        re.compile(r"\b(endpoint|api call|which call|what call|request do i|route)\b", re.I),
        re.compile(r"\b(GET|POST|DELETE|PATCH|PUT)\b|/v\d"),
    ),
    (re.compile(r"\bwhere\b", re.I), re.compile("\u2192")),
    (
        re.compile(r"\b(prefix|start with|starts with|begin with|look like|format)\b", re.I),
        re.compile(r"`[^`]*_`|`[a-z]+_[^`]*`"),
    ),
    (
        re.compile(
            r"\b(called|name of|what's the name|which (field|header|function|exception|event"
            r"|parameter|status|role|attribute|method|code))\b",
            re.I,
        ),
        re.compile(r"`[^`]+`|\b[A-Z][a-z]+ [A-Z][a-z]+\b"),
    ),
    (
        re.compile(r"\b(how (long|quickly|soon|often)|when|after how|until)\b", re.I),
        re.compile(
            r"\b\d+\s*(second|minute|hour|day|week|month|year)s?\b|\b(immediately|instantly"
            r"|right away|every (day|week|month|quarter|year))\b",
            re.I,
        ),
    ),
    (
        re.compile(r"\b(error code|what code|status code|which error|what error)\b", re.I),
        re.compile(r"`\d{3}|\b\d{3}\b|`[a-z]+_[a-z_]+`"),
    ),
)
# The features `RANKER` weighs, in order (see `sentence_features`).
RANK_FEATURES = (
    "semantic",
    "lexical",
    "relevance",
    "number",
    "code",
    "path",
    "first",
    "length",
    "asks_endpoint",
    "asks_where",
    "asks_prefix",
    "asks_name",
    "asks_time",
    "asks_error_code",
    "semantic_gap",
    "lexical_gap",
    "table_row",
    "code_line",
)


@dataclass(frozen=True, slots=True)
class RankWeights:
    """A logistic model over `RANK_FEATURES`: a sentence's score is
    ``1 / (1 + exp(-(bias + weights . features)))``, or the weighted sum itself when
    ``linear``."""

    weights: tuple[float, ...]
    bias: float
    linear: bool = False

    @classmethod
    def named(cls, bias: float = 0.0, *, linear: bool = False, **weights: float) -> RankWeights:
        """Weights by feature name (`RANK_FEATURES`); a feature not named weighs 0."""
        unknown = set(weights) - set(RANK_FEATURES)
        if unknown:
            raise ValueError(f"unknown ranking features: {sorted(unknown)}")
        return cls(tuple(weights.get(f, 0.0) for f in RANK_FEATURES), bias, linear)

    def score(self, features: Sequence[float]) -> float:
        z = self.bias + sum(w * x for w, x in zip(self.weights, features, strict=True))
        if self.linear:
            return z
        return 1.0 / (1.0 + math.exp(-max(min(z, 30.0), -30.0)))


# How closely a sentence matches the question's words and meaning: 0.6 similarity, 0.3
# overlap, 0.1 for a number a quantity question asks for (the ranking before `RANKER`). The
# evidence's ``coverage`` is measured on the sentences it chooses: on the tuning split,
# coverage over `RANKER`'s choice told answerable from unanswerable questions less well
# (leaving each written split out of the calibration: abstention 0.431 at false abstention
# 0.034, against 0.444 at 0.036).
MATCH = RankWeights.named(semantic=0.6, lexical=0.3, number=0.1, linear=True)
# Fitted by ``python benchmarks/sentence_ranker.py --json out.json`` (see its docstring).
RANKER = RankWeights.named(
    bias=-0.426,
    semantic=0.4568,
    lexical=4.0485,
    relevance=3.2826,
    number=0.3807,
    code=-0.106,
    path=-0.4374,
    first=-0.7871,
    length=0.3679,
    asks_endpoint=0.4435,
    asks_where=1.6808,
    asks_prefix=0.8766,
    asks_name=0.1124,
    asks_time=1.7932,
    asks_error_code=0.8244,
    semantic_gap=6.2478,
    lexical_gap=3.2924,
    table_row=-0.6378,
    code_line=0.4206,
)


@dataclass(frozen=True, slots=True)
class Sentence:
    """A quotable sentence of a context."""

    context: int  # index into the contexts (request.context_texts)
    position: int  # index of the sentence within its context
    text: str
    terms: frozenset[str]
    kind: str = "prose"  # or "row" (a table row in words) or "code" (a line of a code block)


@dataclass(frozen=True, slots=True)
class RankedSentence:
    sentence: Sentence
    score: float
    semantic: float
    lexical: float


class ExtractiveBackend:
    """Answers from ``request.context_texts`` without any model (``Generation.extractive``).

    When the request carries ``quotes`` (sentences already ranked by the pipeline, with
    semantic similarity), they are quoted as given; otherwise sentences are ranked here by
    lexical overlap and position.
    """

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
    quotes = request.quotes or [
        Quote(r.sentence.context, r.sentence.text, r.score)
        for r in choose_sentences(
            rank_sentences(request.query, split_sentences(request.context_texts, request.query))
        )
    ]
    if not quotes:
        return _generation(request, NOTHING_FOUND, [])
    parts = [f"{q.text} [{numbers[q.context]}]" for q in quotes]
    order = list(dict.fromkeys(q.context for q in quotes))  # first quoted, first cited
    citations = [request.contexts[i] for i in order] if request.contexts else []
    return _generation(request, f"{PREFIX} " + " ".join(parts), citations)


def select_sentences(query: str, contexts: Sequence[str]) -> list[Sentence]:
    """The 2-4 sentences that best match ``query`` (lexical overlap and position), best first."""
    sentences = split_sentences(contexts, query)
    return [r.sentence for r in choose_sentences(rank_sentences(query, sentences))]


def split_sentences(contexts: Sequence[str], query: str | None = None) -> list[Sentence]:
    """Every quotable sentence of ``contexts``, in order (context, position): prose and table
    rows, and when ``query`` asks about a code sample (`asks_about_code`) the code lines too."""
    code = query is not None and asks_about_code(query)
    return [s for i, text in enumerate(contexts) for s in _sentences(i, text, code)]


def asks_about_code(query: str) -> bool:
    """Whether ``query`` asks about a code sample ("the Python quickstart", "the sample
    verify()"): then the lines of the chunks' code blocks are candidates too."""
    return bool(_ASKS_CODE.search(query))


def rank_sentences(
    query: str,
    sentences: Sequence[Sentence],
    semantic: Sequence[float] | None = None,
    relevance: Sequence[float] | None = None,
    *,
    ranker: RankWeights | None = None,
) -> list[RankedSentence]:
    """``sentences`` scored for ``query`` (see the module docstring), best first.

    ``semantic`` holds one similarity per sentence (cosine, MiniLM) or is None; ``relevance``
    one score per context (the retrieval's dense score of the sentence's chunk) or None. With
    a semantic score, ``ranker`` (default `RANKER`) combines the features; without one, a
    sentence that shares no term with the query is left out.
    """
    lexical = lexical_overlaps(query, sentences)
    if not lexical:
        return []
    if semantic is not None:
        model = ranker or RANKER
        rows = sentence_features(query, sentences, semantic, lexical, relevance)
        ranked = [
            RankedSentence(s, model.score(row), float(semantic[i]), lexical[i])
            for i, (s, row) in enumerate(zip(sentences, rows, strict=True))
        ]
    else:
        wants_number = bool(_ASKS_QUANTITY.search(query))
        ranked = []
        for s, lex in zip(sentences, lexical, strict=True):
            if lex <= 0.0:
                continue
            score = LEXICAL_WEIGHT * lex + POSITION_WEIGHT * _position(s)
            if wants_number and _NUMBER.search(s.text):
                score += NUMBER_BONUS
            ranked.append(RankedSentence(s, score, 0.0, lex))
    ranked.sort(key=lambda r: (-r.score, r.sentence.context, r.sentence.position))
    return ranked


def lexical_overlaps(query: str, sentences: Sequence[Sentence]) -> list[float]:
    """Each sentence's idf-weighted share of the query's terms (idf over ``sentences``);
    empty when there are no sentences or the query has no terms."""
    query_terms = set(terms(query))
    if not sentences or not query_terms:
        return []
    weights = term_weights(query_terms, sentences)
    total = sum(weights.values())
    return [sum(weights[t] for t in query_terms & s.terms) / total for s in sentences]


def sentence_features(
    query: str,
    sentences: Sequence[Sentence],
    semantic: Sequence[float],
    lexical: Sequence[float],
    relevance: Sequence[float] | None = None,
) -> list[list[float]]:
    """One row of `RANK_FEATURES` per sentence: its similarity and term overlap with the
    question, its chunk's relevance (0.0 when not given), whether it states a number a
    quantity question asks for, holds a code span or a menu path, opens its chunk, its length,
    whether it holds the answer type the question asks for (one feature per `_ANSWER_TYPES`),
    how far its similarity and overlap fall behind the best candidate's, and whether it is a
    table row or a code line."""
    wants_number = bool(_ASKS_QUANTITY.search(query))
    asks = [bool(question.search(query)) for question, _ in _ANSWER_TYPES]
    best_semantic = max(semantic, default=0.0)
    best_lexical = max(lexical, default=0.0)
    rows = []
    for i, s in enumerate(sentences):
        rel = float(relevance[s.context]) if relevance is not None else 0.0
        text = s.text
        rows.append(
            [
                float(semantic[i]),
                lexical[i],
                rel,
                float(wants_number and bool(_NUMBER.search(text))),
                float("`" in text),
                float("\u2192" in text),
                1.0 / (1.0 + s.position),
                min(len(text) / 300.0, 1.0),
                *(
                    float(ask and bool(answer.search(text)))
                    for ask, (_, answer) in zip(asks, _ANSWER_TYPES, strict=True)
                ),
                float(semantic[i]) - best_semantic,
                lexical[i] - best_lexical,
                float(s.kind == "row"),
                float(s.kind == "code"),
            ]
        )
    return rows


def choose_sentences(ranked: Sequence[RankedSentence]) -> list[RankedSentence]:
    """The sentences to quote: the best, then up to MAX_SENTENCES close to it, no repeats."""
    if not ranked:
        return []
    best = ranked[0].score
    kept: list[RankedSentence] = []
    for r in ranked:
        if len(kept) >= MIN_SENTENCES and r.score < _RELATIVE_CUTOFF * best:
            break
        if any(_near_duplicate(r.sentence, k.sentence) for k in kept):
            continue
        kept.append(r)
        if len(kept) == MAX_SENTENCES:
            break
    return kept


def coverage(query: str, sentences: Sequence[Sentence], pool: Sequence[Sentence]) -> float:
    """The idf-weighted share of the query's terms found in ``sentences`` (idf over ``pool``;
    a term that no sentence of the pool has weighs the most). 0.0 for a query of stop words."""
    query_terms = set(terms(query))
    if not query_terms:
        return 0.0
    weights = term_weights(query_terms, pool)
    found = set().union(*(s.terms for s in sentences)) if sentences else set()
    return sum(weights[t] for t in query_terms & found) / sum(weights.values())


def term_weights(query_terms: set[str], pool: Sequence[Sentence]) -> dict[str, float]:
    """Smoothed idf of each query term over ``pool``: rare terms weigh more."""
    df = Counter(t for s in pool for t in s.terms if t in query_terms)
    n = max(len(pool), 1)
    return {t: math.log(1.0 + n / (df.get(t, 0) + 0.5)) for t in query_terms}


def terms(text: str) -> list[str]:
    """Lower-cased, stop-word-free, crudely stemmed words of ``text``."""
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP_WORDS]


def _stem(word: str) -> str:
    # Lemma-lite: enough to match "caches"/"caching"/"cached" with "cache"; never below 3 chars.
    for suffix in ("ingly", "edly", "ing", "ies", "ed", "es", "ly", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def _position(s: Sentence) -> float:
    # The retrieval rank of the chunk counts more than the place of the sentence in it.
    return 0.7 / (1.0 + s.context) + 0.3 / (1.0 + s.position)


def _near_duplicate(a: Sentence, b: Sentence) -> bool:
    return len(a.terms & b.terms) / max(len(a.terms | b.terms), 1) >= _NEAR_DUPLICATE


def _sentences(context: int, text: str, code: bool = False) -> list[Sentence]:
    return [
        Sentence(context, i, piece, words, kind)
        for i, (piece, words, kind) in enumerate(_parts(text, code))
    ]


@functools.lru_cache(maxsize=_PARTS_CACHE)
def _parts(text: str, code: bool = False) -> tuple[tuple[str, frozenset[str], str], ...]:
    # The same chunks come back for many questions (and for every collection weighed):
    # their quotable sentences and terms are worked out once per text.
    out: list[tuple[str, frozenset[str], str]] = []
    for kind, line in _lines(text, code):
        pieces = _SENTENCE_END.split(line) if kind == "prose" else [line]
        for piece in pieces:
            piece = piece.strip()
            words = frozenset(terms(piece))
            ok = _quotable_code(piece) if kind == "code" else _quotable(piece)
            if ok and words:
                out.append((piece, words, kind))
    return tuple(out)


def _lines(text: str, code: bool) -> list[tuple[str, str]]:
    """(kind, text) of each quotable line of a Markdown chunk, in order: prose lines with their
    markup stripped, table rows in words (`_table_row`), and with ``code`` the lines of fenced
    and indented code blocks as inline code spans."""
    lines = _without_front_matter(text.split("\n"))
    out: list[tuple[str, str]] = []
    header: list[str] | None = None
    for i, (line, in_code) in enumerate(zip(lines, _code_mask(lines), strict=True)):
        if in_code or (_INDENTED_CODE.match(line) and not _MARKUP.match(line)):
            body = line.strip()
            if code and body and not _FENCE_LINE.match(line) and "`" not in body:
                out.append(("code", f"`{body}`"))
            continue
        if _HEADING.match(line):
            continue
        if _TABLE_ROW.search(line):
            if _TABLE_SEPARATOR.match(line):
                continue
            cells = _cells(line)
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if _TABLE_SEPARATOR.match(following):
                header = cells  # a header row names the columns of the rows below it
                continue
            row = _table_row(cells, header)
            if row:
                out.append(("row", row))
            continue
        header = None
        cleaned = _MARKUP.sub("", line).strip()
        if cleaned:
            out.append(("prose", cleaned))
    return out


def _cells(line: str) -> list[str]:
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [cell.strip().replace("\\|", "|") for cell in _CELL_SPLIT.split(body)]


def _table_row(cells: list[str], header: list[str] | None) -> str:
    """A table row as one sentence: "Name: cell; Name: cell" under a header of as many
    columns, else its cells joined by "; ". Empty when fewer than two cells have text."""
    if sum(bool(c) for c in cells) < 2:
        return ""
    if header is not None and len(header) == len(cells):
        return "; ".join(f"{h}: {c}" if h else c for h, c in zip(header, cells, strict=True) if c)
    return "; ".join(c for c in cells if c)


def _quotable_code(piece: str) -> bool:
    # A code line is quoted whole, with its backticks: long enough to say something, with a
    # word in it (not a lone brace), and not a comment-only line.
    body = piece.strip("`").strip()
    low, high = _CODE_CHARS
    return low <= len(body) <= high and bool(_CODE_WORD.search(body)) and body[0] not in "#/"


def _quotable(piece: str) -> bool:
    # Questions restate the query; they are never the answer. Mostly-symbol text is code.
    if not _MIN_CHARS <= len(piece) <= _MAX_CHARS or piece.endswith("?"):
        return False
    letters = sum(ch.isalpha() or ch.isspace() for ch in piece)
    return letters >= 0.6 * len(piece)


def prose_lines(text: str) -> list[str]:
    """The prose lines of a Markdown chunk, markup stripped: no front matter, headings,
    table rows, indented code, fenced code, or the fence debris of a chunk cut mid-block."""
    return [line for kind, line in _lines(text, code=False) if kind == "prose"]


def _without_front_matter(lines: list[str]) -> list[str]:
    if not lines or lines[0].strip() != "---":
        return lines
    for i in range(1, len(lines)):
        if lines[i].strip() in ("---", "..."):
            return lines[i + 1 :]
    return lines


def _code_mask(lines: list[str]) -> list[bool]:
    """Which lines are code (fence lines included). A chunk cut inside a block shows an
    unmatched fence: a bare closing fence first means the lines before it were code, an
    unclosed opening fence means the lines after it are."""
    fences = [i for i, line in enumerate(lines) if _FENCE_LINE.match(line)]
    mask = [False] * len(lines)
    if not fences:
        return mask
    bare = [lines[i].strip() in ("```", "~~~") for i in fences]
    inside = bare[0] and (len(fences) % 2 == 1 or (len(bare) > 1 and not bare[1]))
    for i in range(len(lines)):
        if i in fences:
            mask[i] = True
            inside = not inside
            continue
        mask[i] = inside
    return mask


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
