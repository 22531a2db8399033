"""Tokenizer adapters, fingerprints, the packed token codec and segment encoding.

``RemoteTokenizer`` is imported on first access: it imports httpx, which a local tokenizer
(and every CLI start) should not pay for.
"""

from typing import TYPE_CHECKING, Any

from genesis.tokens._codec import pack_ids, unpack_ids
from genesis.tokens._hf import HFTokenizer
from genesis.tokens._protocol import SyncTokenizer, TokenIds, Tokenizer, as_token_ids
from genesis.tokens._segments import SegmentEncoder, normalize_segment

if TYPE_CHECKING:
    from genesis.tokens._remote import RemoteTokenizer

__all__ = [
    "HFTokenizer",
    "RemoteTokenizer",
    "SegmentEncoder",
    "SyncTokenizer",
    "TokenIds",
    "Tokenizer",
    "as_token_ids",
    "normalize_segment",
    "pack_ids",
    "unpack_ids",
]


def __getattr__(name: str) -> Any:
    if name == "RemoteTokenizer":
        from genesis.tokens._remote import RemoteTokenizer

        return RemoteTokenizer
    raise AttributeError(f"module 'genesis.tokens' has no attribute {name!r}")
