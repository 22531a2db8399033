"""Block hashing matches vLLM's scheme, checked against a reference written here from scratch."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np

from genesis.llm import block_hashes


def _reference(tokens: list[int], seed: str = "0", size: int = 16) -> list[str]:
    # vLLM v1: NONE_HASH = sha256(PYTHONHASHSEED); each full block hashes
    # (parent hash, tuple of its token IDs, extra keys) pickled with the highest protocol.
    def sha(obj: object) -> bytes:
        return hashlib.sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).digest()

    parent = sha(seed)
    out = []
    for i in range(len(tokens) // size):
        parent = sha((parent, tuple(tokens[i * size : (i + 1) * size]), None))
        out.append(parent.hex())
    return out


def test_block_hashes_match_the_reference() -> None:
    tokens = [(i * 7919) % 50_000 for i in range(100)]
    assert [h.hex() for h in block_hashes(tokens)] == _reference(tokens)
    assert len(block_hashes(tokens)) == 6  # 96 tokens in full blocks; the last 4 are not hashed


def test_numpy_ids_hash_like_python_ints() -> None:
    tokens = list(range(1000, 1064))
    assert block_hashes(np.array(tokens, dtype=np.uint32)) == block_hashes(tokens)


def test_the_seed_and_the_block_size_change_every_hash() -> None:
    tokens = list(range(64))
    assert [h.hex() for h in block_hashes(tokens, seed="42")] == _reference(tokens, "42")
    assert [h.hex() for h in block_hashes(tokens, block_size=32)] == _reference(tokens, size=32)
    assert block_hashes(tokens, seed="42")[0] != block_hashes(tokens)[0]


def test_hashes_are_chained_to_the_whole_prefix() -> None:
    a = list(range(48))
    b = [999, *a[1:]]  # differs in the first token only
    ha, hb = block_hashes(a), block_hashes(b)
    assert all(x != y for x, y in zip(ha, hb, strict=True))
    c = [*a[:32], *range(500, 516)]  # same first two blocks
    assert block_hashes(c)[:2] == ha[:2] and block_hashes(c)[2] != ha[2]


def test_max_blocks_keeps_the_leading_ones() -> None:
    tokens = list(range(200))
    assert block_hashes(tokens, max_blocks=3) == block_hashes(tokens)[:3]
    assert block_hashes(list(range(15))) == []
