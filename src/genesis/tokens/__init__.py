"""Tokenizer adapters, fingerprints, the packed token codec and segment encoding."""

from genesis.tokens._hf import HFTokenizer
from genesis.tokens._protocol import TokenIds, Tokenizer, as_token_ids

__all__ = ["HFTokenizer", "TokenIds", "Tokenizer", "as_token_ids"]
