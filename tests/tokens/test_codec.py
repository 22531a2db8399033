"""The packed token codec: round trips at every width, and every corruption is refused."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from genesis.errors import CorruptEntryError
from genesis.tokens import HFTokenizer, pack_ids, unpack_ids
from genesis.tokens._codec import HEADER_SIZE, id_width, unpack_many

KEY = "gt:docs:hf0123456789abcd:" + "ab" * 16
OTHER_KEY = "gt:docs:hf0123456789abcd:" + "cd" * 16
V16, V24, V32 = 50_257, 3_000_000, 20_000_000


def _ids(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.uint32)


@pytest.mark.parametrize(
    ("vocab", "width"),
    [(1, 2), (65_536, 2), (65_537, 3), (1 << 24, 3), ((1 << 24) + 1, 4), (1 << 32, 4)],
)
def test_width_is_the_narrowest_the_vocabulary_allows(vocab: int, width: int) -> None:
    assert id_width(vocab) == width


@pytest.mark.parametrize("vocab", [0, -1, (1 << 32) + 1])
def test_impossible_vocab_sizes_are_refused(vocab: int) -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        id_width(vocab)


@pytest.mark.parametrize(
    ("vocab", "ids"),
    [
        (V16, [0, 1, 50_256, 31_337]),
        (65_536, [65_535, 0]),
        (V24, [0, 65_536, 2_999_999, 1 << 20]),
        (1 << 24, [(1 << 24) - 1, 255, 256]),
        (V32, [0, 16_777_216, 19_999_999]),
        (V16, []),
    ],
)
def test_round_trip_at_each_width(vocab: int, ids: list[int]) -> None:
    data = pack_ids(_ids(ids), key=KEY, vocab_size=vocab)
    assert len(data) == HEADER_SIZE + id_width(vocab) * len(ids)
    out = unpack_ids(data, key=KEY, vocab_size=vocab)
    assert out.tolist() == ids
    assert out.dtype == (np.uint16 if vocab <= 65_536 else np.uint32)


@pytest.mark.parametrize("seed", range(20))
def test_round_trip_on_random_ids(seed: int) -> None:
    # Property-style without hypothesis (not a dependency): random vocab, length and IDs,
    # always including the vocabulary's edges.
    rng = np.random.default_rng(seed)
    vocab = int(rng.choice([V16, 65_536, V24, 1 << 24, V32, 1 << 32]))
    ids = rng.integers(0, vocab, size=int(rng.integers(0, 600)), dtype=np.uint64).tolist()
    ids += [0, vocab - 1]
    packed = pack_ids(_ids(ids), key=KEY, vocab_size=vocab)
    assert unpack_ids(packed, key=KEY, vocab_size=vocab).tolist() == ids


def test_uint16_decode_is_a_zero_copy_read_only_view() -> None:
    data = pack_ids(_ids([1, 2, 3]), key=KEY, vocab_size=V16)
    out = unpack_ids(data, key=KEY)
    assert not out.flags.owndata and not out.flags.writeable
    assert np.shares_memory(out, np.frombuffer(data, dtype=np.uint8))


def test_real_tokenizer_ids_round_trip_at_two_bytes_per_token(tokenizers_dir: Path) -> None:
    tok = HFTokenizer.from_file(tokenizers_dir / "gpt2")
    [ids] = tok.encode_batch_sync(["Token-cached RAG packs IDs at the narrowest width. " * 40])
    data = pack_ids(ids, key=KEY, vocab_size=tok.vocab_size)
    assert len(data) == HEADER_SIZE + 2 * len(ids)
    out = unpack_ids(data, key=KEY, vocab_size=tok.vocab_size)
    np.testing.assert_array_equal(out, ids)


def test_packing_an_id_outside_the_vocabulary_is_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        pack_ids(_ids([5, V16]), key=KEY, vocab_size=V16)


def _valid(vocab: int = V16) -> bytes:
    return pack_ids(_ids([10, 20, 30, 40]), key=KEY, vocab_size=vocab)


def _with_header(data: bytes, **fields: object) -> bytes:
    names = ["magic", "version", "width", "count", "tag", "crc"]
    values = dict(zip(names, struct.unpack_from("<2sBBI4sI", data), strict=True))
    values.update(fields)
    return struct.pack("<2sBBI4sI", *values.values()) + data[HEADER_SIZE:]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated header"),
        (_valid()[:10], "truncated header"),
        (b"XX" + _valid()[2:], "bad magic"),
        (_with_header(_valid(), version=9), "unknown format version"),
        (_with_header(_valid(), width=5), "bad id width"),
        (_valid()[:-1], "truncated payload"),
        (_valid() + b"\x00", "extra bytes"),
        (_with_header(_valid(), count=5), "truncated payload"),
        (_valid()[:-2] + b"\xff\x7f", "checksum mismatch"),
    ],
)
def test_corruption_is_detected_and_named(data: bytes, message: str) -> None:
    with pytest.raises(CorruptEntryError, match=message):
        unpack_ids(data, key=KEY, vocab_size=V16)


def test_a_value_read_under_another_key_is_refused() -> None:
    with pytest.raises(CorruptEntryError, match="written for another key"):
        unpack_ids(_valid(), key=OTHER_KEY, vocab_size=V16)


def test_a_value_from_another_tokenizer_is_refused() -> None:
    # The key holds the tokenizer fingerprint, so a foreign tokenizer's value is refused too.
    foreign = pack_ids(_ids([1, 2]), key="gt:docs:hf-some-other-tok:" + "ab" * 16, vocab_size=V16)
    with pytest.raises(CorruptEntryError, match="written for another key"):
        unpack_ids(foreign, key=KEY, vocab_size=V16)


def test_the_format_version_is_2_and_the_header_stays_16_bytes() -> None:
    assert HEADER_SIZE == 16
    assert _valid()[2] == 2


def test_ids_beyond_the_vocabulary_are_refused_even_with_a_valid_checksum() -> None:
    payload = np.asarray([1, 60_000], dtype="<u2").tobytes()
    data = _with_header(_valid(), count=2, crc=zlib.crc32(payload))[:HEADER_SIZE] + payload
    assert unpack_ids(data, key=KEY).tolist() == [1, 60_000]
    with pytest.raises(CorruptEntryError, match="vocab_size"):
        unpack_ids(data, key=KEY, vocab_size=V16)


def test_a_width_that_does_not_match_the_vocabulary_is_refused() -> None:
    data = pack_ids(_ids([1, 2]), key=KEY, vocab_size=V24)
    with pytest.raises(CorruptEntryError, match="width 3 does not match"):
        unpack_ids(data, key=KEY, vocab_size=V16)


def _beyond_vocab() -> bytes:
    """A well-formed uint16 value (valid checksum) holding an ID >= V16."""
    payload = np.asarray([1, 60_000], dtype="<u2").tobytes()
    return _with_header(_valid(), count=2, crc=zlib.crc32(payload))[:HEADER_SIZE] + payload


_BAD_VALUES = [
    (b"", "truncated header"),
    (b"XX" + _valid()[2:], "bad magic"),
    (_with_header(_valid(), version=9), "unknown format version"),
    (_valid()[:-1], "truncated payload"),
    (_valid()[:-2] + b"\xff\x7f", "checksum mismatch"),
    (pack_ids(_ids([1, 2]), key=OTHER_KEY, vocab_size=V16), "another key"),
    (pack_ids(_ids([1, 2]), key=KEY, vocab_size=V24), "width 3 does not match"),
    (_beyond_vocab(), "vocab_size"),
]


@pytest.mark.parametrize(("bad", "message"), _BAD_VALUES)
def test_unpack_many_returns_each_bad_value_as_its_error_and_decodes_the_rest(
    bad: bytes, message: str
) -> None:
    good = pack_ids(_ids([7, 50_256]), key=KEY, vocab_size=V16)
    out = unpack_many([good, bad, None, _valid()], keys=[KEY] * 4, vocab_size=V16)
    assert isinstance(out[1], CorruptEntryError) and message in str(out[1])
    with pytest.raises(CorruptEntryError, match=message):
        unpack_ids(bad, key=KEY, vocab_size=V16)  # the same verdict, one at a time
    assert out[2] is None
    assert [a.tolist() for a in (out[0], out[3]) if isinstance(a, np.ndarray)] == [
        [7, 50_256],
        [10, 20, 30, 40],
    ]


@pytest.mark.parametrize("vocab", [V16, 65_536, V24, V32, 1 << 32])
def test_unpack_many_agrees_with_unpack_ids_at_every_width(vocab: int) -> None:
    rng = np.random.default_rng(vocab % 1000)
    batches = [
        rng.integers(0, vocab, size=n, dtype=np.uint64).tolist() + [vocab - 1] for n in (0, 5, 300)
    ]
    values = [pack_ids(_ids(ids), key=KEY, vocab_size=vocab) for ids in batches]
    out = unpack_many(values, keys=[KEY] * len(values), vocab_size=vocab)
    for arr, data in zip(out, values, strict=True):
        assert isinstance(arr, np.ndarray) and not arr.flags.writeable
        expected = unpack_ids(data, key=KEY, vocab_size=vocab)
        assert arr.dtype == expected.dtype and arr.tolist() == expected.tolist()


def test_unpack_many_of_nothing_or_only_misses() -> None:
    assert unpack_many([], keys=[], vocab_size=V16) == []
    assert unpack_many([None, None], keys=[KEY, KEY], vocab_size=V16) == [None, None]


def test_unpack_many_refuses_a_value_swapped_with_another_keys() -> None:
    mine = pack_ids(_ids([1, 2, 3]), key=KEY, vocab_size=V16)
    theirs = pack_ids(_ids([4, 5]), key=OTHER_KEY, vocab_size=V16)
    swapped = unpack_many([theirs, mine], keys=[KEY, OTHER_KEY], vocab_size=V16)
    assert all(isinstance(v, CorruptEntryError) for v in swapped)
    straight = unpack_many([mine, theirs], keys=[KEY, OTHER_KEY], vocab_size=V16)
    assert [v.tolist() for v in straight if isinstance(v, np.ndarray)] == [[1, 2, 3], [4, 5]]


def test_unpack_many_needs_one_key_per_value() -> None:
    with pytest.raises(ValueError, match="keys"):
        unpack_many([None], keys=[], vocab_size=V16)
