"""Tokenizer adapters, fingerprints, the packed token codec and segment encoding.

``RemoteTokenizer`` is imported on first access: it imports httpx, which a local tokenizer
(and every CLI start) should not pay for.
"""

from typing import TYPE_CHECKING

from genesis._lazy import lazy_exports
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


__getattr__ = lazy_exports(
    __name__,
    {
        "RemoteTokenizer": "genesis.tokens._remote",
    },
)
