"""The Tokenizer protocol every adapter implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np
import numpy.typing as npt

# Token IDs travel as 1-D numpy arrays of unsigned ints (uint16 or uint32): unpacking a cached
# value is then a zero-copy view (~1 us) instead of building a Python list (~30 us per 2,500
# IDs). Convert with ``.tolist()`` once, where JSON is written.
TokenIds: TypeAlias = npt.NDArray[np.unsignedinteger[Any]]


def as_token_ids(ids: Sequence[int] | TokenIds) -> TokenIds:
    """Return ``ids`` as a 1-D uint32 array (no copy when it already is one)."""
    return np.asarray(ids, dtype=np.uint32).reshape(-1)


@runtime_checkable
class Tokenizer(Protocol):
    """A real tokenizer (never a whitespace split).

    Contract:
    - ``encode_batch`` returns one array per text, in order, with **no special tokens**
      (no BOS/EOS); the same text always gives the same IDs.
    - ``decode(encode(t))`` gives back ``t`` for ordinary text (normalisation aside).
    - ``fingerprint`` is a short stable hex string that changes whenever the IDs for some
      text could change (another vocabulary, merges, normaliser, pre-tokenizer, model).
      Cache keys are built from it, so two tokenizers with equal fingerprints must be
      interchangeable.
    - ``vocab_size`` bounds every ID: ``0 <= id < vocab_size``.
    """

    @property
    def name(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def vocab_size(self) -> int: ...

    async def encode_batch(self, texts: Sequence[str]) -> list[TokenIds]: ...

    async def decode(self, ids: Sequence[int] | TokenIds) -> str: ...


@runtime_checkable
class SyncTokenizer(Tokenizer, Protocol):
    """A `Tokenizer` that runs in process and can also encode and decode on the calling thread.

    ``encode_batch_sync``/``decode_sync`` have the contract of ``encode_batch``/``decode``;
    they block (CPU), so async code calls them in the CPU executor, batched with the work
    around them (one hop instead of two).
    """

    def encode_batch_sync(self, texts: Sequence[str]) -> list[TokenIds]: ...

    def decode_sync(self, ids: Sequence[int] | TokenIds) -> str: ...
