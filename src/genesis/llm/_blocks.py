"""Chained block hashes of a prompt, computed as vLLM's automatic prefix cache computes them.

Matched against vLLM's source (``vllm/v1/core/kv_cache_utils.py``, vllm-project/vllm):

- ``hash_block_tokens(hash_function, parent_block_hash, curr_block_token_ids, extra_keys)``
  returns ``hash_function((parent_block_hash, tuple(curr_block_token_ids), extra_keys))``, with
  ``parent_block_hash`` replaced by ``NONE_HASH`` for the first block;
- ``request_block_hasher`` hashes **full** blocks only (``end_token_idx > num_tokens`` stops),
  each chained to the previous block's hash;
- the default hash function (``CacheConfig.prefix_caching_hash_algo = "sha256"`` in
  ``vllm/config/cache.py``; ``vllm.utils.hashing.sha256``) is
  ``hashlib.sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).digest()`` (releases
  before it defaulted to Python's ``hash()``; ``sha256_cbor`` and ``xxhash`` are options);
- ``init_none_hash`` sets ``NONE_HASH = hash_fn(PYTHONHASHSEED)`` when that variable is set
  (else 32 random bytes per process): ``seed`` here plays that part.

Token IDs are hashed as Python ints (vLLM's ``all_token_ids`` is a list of ints; pickled NumPy
integers would hash differently). Extra keys (LoRA, multimodal, cache salt) are ``None``:
Genesis sends neither. The router only needs the hashes to be equal for equal prefixes, but
matching vLLM's scheme keeps one definition of "the same cached prefix" on both sides.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence
from typing import Any

BLOCK_SIZE = 16  # vLLM's default ``--block-size`` on CUDA
DEFAULT_SEED = "0"


def sha256_pickle(obj: Any) -> bytes:
    """vLLM's ``sha256``: SHA-256 of the object pickled with the highest protocol."""
    return hashlib.sha256(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def none_hash(seed: str = DEFAULT_SEED) -> bytes:
    """The parent hash of the first block, as vLLM derives it from ``PYTHONHASHSEED``."""
    return sha256_pickle(seed)


def hash_block(parent: bytes, block: Sequence[int]) -> bytes:
    """One block's hash, chained to ``parent`` (no extra keys)."""
    return sha256_pickle((parent, tuple(block), None))


def block_hashes(
    ids: Sequence[int] | Any,
    *,
    block_size: int = BLOCK_SIZE,
    max_blocks: int | None = None,
    seed: str = DEFAULT_SEED,
) -> list[bytes]:
    """Chained hashes of the full ``block_size`` blocks of ``ids`` (at most ``max_blocks``).

    ``ids`` may be a NumPy array: it is turned into Python ints first.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    tokens = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    full = len(tokens) // block_size
    if max_blocks is not None:
        full = min(full, max_blocks)
    parent = none_hash(seed)
    out: list[bytes] = []
    for start in range(0, full * block_size, block_size):
        parent = hash_block(parent, tokens[start : start + block_size])
        out.append(parent)
    return out
