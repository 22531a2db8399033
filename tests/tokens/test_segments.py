"""Segment normal form and in-context (anchored) encoding on the three real tokenizers."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from genesis.errors import TokenizerError
from genesis.tokens import HFTokenizer, TokenIds, Tokenizer, as_token_ids
from genesis.tokens._segments import SegmentEncoder, is_normalized, normalize_segment

TOKENIZERS = ["gpt2", "mistral-7b-v0.1", "phi-3-mini-4k-instruct"]

# Strings chosen to break naive concatenation somewhere: leading/trailing whitespace, "\r\n",
# tabs, "\n\n" at the end, contractions, combining marks, BOM, zero-width and no-break spaces,
# the literal Metaspace character, literal special tokens, CJK and emoji (byte-fallback pieces).
TRICKY = [
    "'s the thing",
    "\u0301accent first",
    "\ufeffbom",
    "\u200bzero width",
    "▁meta space",
    "<s> and </s>",
    "<|endoftext|> x",
    "<|end|> y",
    "日本語のテキスト。",
    "😀 emoji 👍🏽",
    "x\r\ny\r\n",
    "\tdef f():\n\t\treturn 1\n\n\n",
    "   code  ",
    "\xa0no-break",
    "---\ntitle: Front matter\n---\n\n# Heading",
    "    indented = True  \n",
    "a",
]


@pytest.fixture(scope="module", params=TOKENIZERS)
def inner(request: pytest.FixtureRequest, tokenizers_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizers_dir / request.param)


@pytest.fixture
def encoder(inner: HFTokenizer) -> SegmentEncoder:
    return SegmentEncoder(inner)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("hello", "hello\n"),
        ("  hello  ", "hello\n"),
        ("\n\nhello\n\n\n", "hello\n"),
        ("a\r\nb\rc\r\n", "a\nb\nc\n"),
        ("a\n\n\tb \t\n", "a\n\n\tb\n"),
        ("\u3000ideographic space\u3000", "ideographic space\n"),
    ],
)
def test_normalize_strips_outer_whitespace_and_ends_with_one_newline(
    raw: str, expected: str
) -> None:
    assert normalize_segment(raw) == expected
    assert is_normalized(expected)
    assert normalize_segment(expected) == expected


@pytest.mark.parametrize("raw", ["", "   ", "\n\n", "\r\n\t"])
def test_normalize_refuses_an_empty_segment(raw: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        normalize_segment(raw)


@pytest.mark.parametrize("text", ["no newline", " leading\n", "two\n\n", "crlf\r\n", "\n"])
async def test_encode_refuses_text_not_in_normal_form(encoder: SegmentEncoder, text: str) -> None:
    with pytest.raises(TokenizerError, match="not a normalised segment"):
        await encoder.encode_batch([text])
    with pytest.raises(TokenizerError, match="not a normalised segment"):
        await encoder.encode_first([text])


async def test_encode_refuses_a_bare_string(encoder: SegmentEncoder) -> None:
    with pytest.raises(TokenizerError, match="not one str"):
        await encoder.encode_batch("hello\n")


async def _encode_each(
    encoder: SegmentEncoder, segments: list[str], *, first: bool
) -> dict[int, TokenIds]:
    """Encode one by one; a refused segment (TokenizerError) is left out."""
    out: dict[int, TokenIds] = {}
    for i, text in enumerate(segments):
        try:
            [out[i]] = await (encoder.encode_first if first else encoder.encode_batch)([text])
        except TokenizerError:
            pass
    return out


async def test_tricky_segments_concatenate_to_the_whole_text_or_are_refused(
    encoder: SegmentEncoder, inner: HFTokenizer
) -> None:
    segments = [normalize_segment(t) for t in TRICKY]
    firsts = await _encode_each(encoder, segments, first=True)
    rest = await _encode_each(encoder, segments, first=False)
    refused = {TRICKY[i] for i in range(len(TRICKY)) if i not in firsts or i not in rest}
    # Only literal special tokens that strip the whitespace around them may be refused.
    assert all("<" in t and ">" in t for t in refused), refused
    drifted = []
    for a, b, c in itertools.permutations(range(len(segments)), 3):
        if a not in firsts or b not in rest or c not in rest:
            continue
        ids = np.concatenate([firsts[a], rest[b], rest[c]])
        whole = inner.encode_batch_sync([segments[a] + segments[b] + segments[c]])[0]
        if not np.array_equal(ids, whole):
            drifted.append((TRICKY[a], TRICKY[b], TRICKY[c]))
    assert drifted == []


@pytest.mark.parametrize(
    ("name", "text"),
    [
        # <|endoftext|> has lstrip: it swallows the "\n" before it.
        ("gpt2", "<|endoftext|> after a boundary"),
        # <|end|> has rstrip and the text after it gets a fresh "▁".
        ("phi-3-mini-4k-instruct", "ends with <|end|>"),
        ("phi-3-mini-4k-instruct", "struck <s>out</s>"),
    ],
)
async def test_literal_special_tokens_at_a_boundary_are_refused_not_drifted(
    tokenizers_dir: Path, name: str, text: str
) -> None:
    encoder = SegmentEncoder(HFTokenizer.from_file(tokenizers_dir / name))
    with pytest.raises(TokenizerError, match="position-independently"):
        await encoder.encode_batch(["Plain text.\n", normalize_segment(text)])
    assert encoder.anchor_failures == 1


async def test_in_context_encoding_drops_exactly_the_anchor(
    encoder: SegmentEncoder, inner: HFTokenizer
) -> None:
    anchor = inner.encode_batch_sync([encoder.anchor])[0]
    with_anchor = inner.encode_batch_sync([encoder.anchor + "Hello world\n"])[0]
    [ids] = await encoder.encode_batch(["Hello world\n"])
    assert ids.dtype == np.uint32
    assert np.array_equal(with_anchor[: len(anchor)], anchor)
    assert np.array_equal(ids, with_anchor[len(anchor) :])
    assert encoder.anchor_failures == 0


async def test_sentencepiece_start_of_text_differs_but_first_segment_matches(
    encoder: SegmentEncoder, inner: HFTokenizer
) -> None:
    [first] = await encoder.encode_first(["Hello world\n"])
    [later] = await encoder.encode_batch(["Hello world\n"])
    assert np.array_equal(first, inner.encode_batch_sync(["Hello world\n"])[0])
    # Metaspace/Prepend tokenizers put "▁" on a text start; GPT-2 does not.
    assert np.array_equal(first, later) == (inner.name == "gpt2")


async def test_decode_gives_back_the_segment(encoder: SegmentEncoder) -> None:
    [ids] = await encoder.encode_first(["Path parameters, 2 of them.\n"])
    assert await encoder.decode(ids) == "Path parameters, 2 of them.\n"


def test_fingerprint_covers_the_inner_tokenizer_and_the_anchor(
    encoder: SegmentEncoder, inner: HFTokenizer
) -> None:
    assert encoder.fingerprint != inner.fingerprint
    assert encoder.fingerprint == SegmentEncoder(inner).fingerprint
    assert encoder.fingerprint != SegmentEncoder(inner, anchor="\n").fingerprint
    assert encoder.fingerprint.startswith("sg") and len(encoder.fingerprint) == 16
    assert encoder.vocab_size == inner.vocab_size
    assert isinstance(encoder, Tokenizer)


@pytest.mark.parametrize("anchor", ["", "x", " .\n", "a\n\n", ".\n "])
def test_anchor_must_be_a_well_formed_predecessor(inner: HFTokenizer, anchor: str) -> None:
    with pytest.raises(ValueError, match="anchor"):
        SegmentEncoder(inner, anchor=anchor)


class _MergingTokenizer:
    """A toy character tokenizer whose vocabulary has one token for "\\n#": it merges a
    segment starting with "#" into the anchor, which the encoder must detect."""

    name = "toy"
    fingerprint = "toy0"
    vocab_size = 0x110000

    async def encode_batch(self, texts: Sequence[str]) -> list[TokenIds]:
        return [as_token_ids(self._encode(t)) for t in texts]

    async def decode(self, ids: Sequence[int] | TokenIds) -> str:
        return "".join("\n#" if i == 0 else chr(i) for i in as_token_ids(ids).tolist())

    @staticmethod
    def _encode(text: str) -> list[int]:
        ids: list[int] = []
        for part in text.split("\n#"):
            ids.extend([*map(ord, part), 0])
        return ids[:-1]


async def test_a_segment_that_merges_with_the_anchor_is_refused_and_counted() -> None:
    encoder = SegmentEncoder(_MergingTokenizer(), anchor="\n")
    assert len(await encoder.encode_batch(["plain\n"])) == 1
    with pytest.raises(TokenizerError, match="merges across its boundary"):
        await encoder.encode_batch(["# heading\n"])
    assert encoder.anchor_failures == 1
