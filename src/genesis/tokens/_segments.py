r"""Segment encoding: tokenize prompt pieces separately, concatenate them without drift.

A prompt is a list of *segments* (system piece, template pieces, chunks, query) that are
tokenized separately (templates once at start, chunks once ever via the token cache) and
concatenated in token space. Naively ``encode(a) + encode(b) != encode(a + b)``: BPE merges
across the boundary, SentencePiece-style tokenizers prepend "▁" to every separately encoded
text, and GPT-2's whitespace regex tokenizes "\n\n" differently at a text end and before a
letter. :class:`SegmentEncoder` removes that drift with three rules.

**Invariants that make concatenation safe** (scheme ``nl-anchor-v1``):

1. *Normal form.* Every segment has no leading whitespace and ends with exactly one "\n"
   (``\r\n``/``\r`` become ``\n``, trailing whitespace is stripped, then one "\n" is
   appended; an empty segment is refused). So every boundary in a prompt reads
   ``<non-space>\n<non-space>``: one newline, never touching another whitespace character.
2. *That boundary is a hard split* in the tokenizer: no token spans it and the tokens on each
   side do not depend on the other side.
   - GPT-2 byte-level BPE: the pre-tokenizer regex puts a lone "\n" between two non-space
     characters into its own pre-token (``\s+(?!\S)`` cannot match it, ``\s+`` does), and BPE
     never merges across pre-tokens. ("\n\n" and "\n\xa0" *are* tokens, hence rule 1.)
   - Mistral/Llama SentencePiece BPE (Metaspace, ``prepend_scheme="first"``, no split) and
     Phi-3 (``Prepend("▁")`` + ``Replace(" ", "▁")`` normaliser): the vocabulary holds no
     piece containing "\n" (it is the byte-fallback token ``<0x0A>``), so no merge pairs
     with it and BPE on each side evolves independently.
3. *Context, not isolation, and checked.* A segment that follows another one is encoded as
   ``encode(ANCHOR + segment + PROBE)`` keeping only the segment's own tokens, where
   ``ANCHOR`` (default ``".\n"``) is a minimal well-formed predecessor segment and ``PROBE``
   (``"A\n"``) a typical successor. The anchor removes the "▁" that SentencePiece-style
   tokenizers prepend to a text start. The dropped prefix must equal ``encode(ANCHOR)`` and
   the dropped suffix the probe's own in-context tokens, exactly; otherwise the segment is
   refused with :class:`~genesis.errors.TokenizerError` and counted in ``anchor_failures``,
   never silently encoded with drift. The first segment of a prompt is encoded as it is at a
   text start, with the same suffix check (:meth:`SegmentEncoder.encode_first`).

The checks catch what rule 2 does not cover: *added tokens* (special tokens) written literally
in a segment are matched before normalisation and some strip the whitespace around them
(GPT-2's ``<|endoftext|>`` has ``lstrip``/``rstrip``: it swallows the boundary "\n"; Phi-3's
``<|end|>`` has ``rstrip`` and the text after it gets a fresh "▁"). Such segments are refused.

Verified on the real ``gpt2``, ``mistral-7b-v0.1`` and ``phi-3-mini-4k-instruct`` tokenizers
(``tests/rag/test_drift.py``, ``benchmarks/drift.py``) over prose, code, front matter,
CJK/emoji (byte-fallback tokens), tabs, "\r\n", zero-width and no-break spaces. Literal
special-token text away from a boundary does not drift, but it reaches the model as the special
token (as it would if the server tokenized the text itself).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence

import numpy as np

from genesis._executor import run_cpu
from genesis.errors import SegmentBoundaryError, TokenizerError
from genesis.tokens._protocol import SyncTokenizer, TokenIds, Tokenizer, as_token_ids

logger = logging.getLogger(__name__)

SCHEME = "nl-anchor-v1"
DEFAULT_ANCHOR = ".\n"
# A typical next segment (most start with a letter): its tokens after a segment must be the
# same as after the anchor, which proves the segment's end does not reach across the boundary.
PROBE = "A\n"


def normalize_segment(text: str) -> str:
    """Return ``text`` in segment normal form (see the module docstring, rule 1).

    Raises ``ValueError`` when nothing but whitespace is left: an empty segment would put
    "\\n\\n" at a boundary.
    """
    body = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not body:
        raise ValueError("segment is empty after normalisation (only whitespace)")
    return body + "\n"


def is_normalized(text: str) -> bool:
    """True when ``text`` is already in segment normal form."""
    try:
        return normalize_segment(text) == text
    except ValueError:
        return False


def _check_anchor(anchor: str) -> str:
    if not anchor.endswith("\n") or anchor[:-1] != anchor[:-1].strip():
        raise ValueError(f"anchor {anchor!r} must be a normalised segment or a lone '\\n'")
    return anchor


class SegmentEncoder:
    """A :class:`~genesis.tokens.Tokenizer` over prompt *segments* in normal form.

    ``encode_batch`` encodes segments that follow another segment (what the token cache
    calls for chunks); ``encode_first`` encodes the leading segment of a prompt. For segments
    ``s0, s1, ..., sn`` in normal form::

        encode_first([s0])[0] ++ encode_batch([s1])[0] ++ ... == inner.encode(s0 + s1 + ... + sn)

    Texts not in normal form are refused with ``TokenizerError`` (normalise them with
    :meth:`normalize` first), so a cached entry always decodes to its key's text.

    Over an in-process tokenizer (a `SyncTokenizer`) a call is ONE CPU-executor hop: encode
    and the boundary checks together; over a remote one the encoding is I/O and the checks
    (array compares) run on the loop.
    """

    def __init__(self, inner: Tokenizer, *, anchor: str = DEFAULT_ANCHOR) -> None:
        self._inner = inner
        self._anchor = _check_anchor(anchor)
        self._context: tuple[TokenIds, TokenIds] | None = None
        self.anchor_failures = 0
        self._failures_lock = threading.Lock()  # encodes run on several executor threads
        material = f"{inner.fingerprint}|{SCHEME}|{anchor!r}|{PROBE!r}".encode()
        # The scheme and the anchor are part of the fingerprint, so IDs cached under another
        # scheme (or by the bare tokenizer) can never be served for a segment.
        self._fingerprint = f"sg{hashlib.sha256(material).hexdigest()[:14]}"

    @property
    def inner(self) -> Tokenizer:
        return self._inner

    @property
    def anchor(self) -> str:
        return self._anchor

    @property
    def name(self) -> str:
        return f"{self._inner.name}+{SCHEME}"

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def vocab_size(self) -> int:
        return self._inner.vocab_size

    @staticmethod
    def normalize(text: str) -> str:
        """See :func:`normalize_segment`."""
        return normalize_segment(text)

    async def encode_batch(self, texts: Sequence[str]) -> list[TokenIds]:
        """Encode segments that follow another segment, position-independently."""
        return await self._encode(texts, first=False)

    async def encode_first(self, texts: Sequence[str]) -> list[TokenIds]:
        """Encode segments that open a prompt (as they are at the start of a text)."""
        return await self._encode(texts, first=True)

    async def decode(self, ids: Sequence[int] | TokenIds) -> str:
        return await self._inner.decode(ids)

    async def _encode(self, texts: Sequence[str], *, first: bool) -> list[TokenIds]:
        _require_normalized(texts)
        if not texts:
            return []
        if isinstance(self._inner, SyncTokenizer):
            return await run_cpu(self._encode_sync, self._inner, texts, first)
        if self._context is None:
            self._set_context(await self._inner.encode_batch(self._context_texts()))
        encoded = await self._inner.encode_batch(self._wrapped(texts, first))
        return self._strip_all(encoded, texts, first)

    def _encode_sync(
        self, inner: SyncTokenizer, texts: Sequence[str], first: bool
    ) -> list[TokenIds]:
        """`_encode` on the calling thread (a worker of the CPU executor)."""
        if self._context is None:
            self._set_context(inner.encode_batch_sync(self._context_texts()))
        encoded = inner.encode_batch_sync(self._wrapped(texts, first))
        return self._strip_all(encoded, texts, first)

    def _wrapped(self, texts: Sequence[str], first: bool) -> list[str]:
        prefix = "" if first else self._anchor
        return [prefix + t + PROBE for t in texts]

    def _strip_all(
        self, encoded: Sequence[TokenIds], texts: Sequence[str], first: bool
    ) -> list[TokenIds]:
        assert self._context is not None
        anchor, probe = self._context
        head = anchor[:0] if first else anchor
        return [
            self._strip(as_token_ids(ids), head, probe, text)
            for ids, text in zip(encoded, texts, strict=True)
        ]

    def _context_texts(self) -> list[str]:
        return [self._anchor, self._anchor + PROBE]

    def _set_context(self, encoded: Sequence[TokenIds]) -> None:
        """Keep (tokens of the anchor, tokens of the probe after the anchor), checked.

        Two threads may both compute it the first time: the results are equal."""
        anchor, both = as_token_ids(encoded[0]), as_token_ids(encoded[1])
        if not np.array_equal(both[: len(anchor)], anchor) or len(both) == len(anchor):
            raise TokenizerError(
                f"{self._inner.name} does not split {self._anchor + PROBE!r} after the "
                "anchor: segment encoding is not possible with this anchor"
            )
        self._context = (anchor, both[len(anchor) :].copy())

    def _strip(self, ids: TokenIds, head: TokenIds, tail: TokenIds, text: str) -> TokenIds:
        h, t = len(head), len(tail)
        if (
            len(ids) <= h + t
            or not np.array_equal(ids[:h], head)
            or not np.array_equal(ids[len(ids) - t :], tail)
        ):
            with self._failures_lock:
                self.anchor_failures += 1
            logger.warning("segment not separable in %s: %r", self._inner.name, text[:40])
            raise SegmentBoundaryError(
                f"segment {text[:40]!r} merges across its boundary with the anchor "
                f"{self._anchor!r} or the probe {PROBE!r} in {self._inner.name}: it cannot "
                "be encoded position-independently (literal special tokens do this)"
            )
        # A copy, so a cached segment does not pin the larger buffer.
        return np.array(ids[h : len(ids) - t], dtype=np.uint32)


def _require_normalized(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TokenizerError("encode_batch takes a sequence of texts, not one str")
    for i, text in enumerate(texts):
        if not is_normalized(text):
            raise TokenizerError(
                f"text {i} ({text[:40]!r}) is not a normalised segment: pass it through "
                "SegmentEncoder.normalize() (no leading whitespace, one trailing newline)"
            )
