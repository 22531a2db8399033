"""Tokenizer adapters, fingerprints, the packed token codec and segment encoding."""

from genesis.tokens._codec import pack_ids, unpack_ids
from genesis.tokens._hf import HFTokenizer
from genesis.tokens._protocol import SyncTokenizer, TokenIds, Tokenizer, as_token_ids
from genesis.tokens._remote import RemoteTokenizer
from genesis.tokens._segments import SegmentEncoder, normalize_segment

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
