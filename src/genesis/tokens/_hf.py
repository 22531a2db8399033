"""Adapter for a Hugging Face ``tokenizer.json`` (the `tokenizers` library)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as _HFTokenizer

from genesis._executor import run_cpu
from genesis.errors import TokenizerError
from genesis.tokens._protocol import TokenIds, as_token_ids


class HFTokenizer:
    """A `tokenizers.Tokenizer` loaded from a ``tokenizer.json`` file.

    Truncation and padding baked into the file are switched off (the MiniLM file has both at
    128), so long chunks are never cut silently.
    """

    def __init__(self, tokenizer: _HFTokenizer, name: str) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tok = tokenizer
        self._name = name
        # The serialised tokenizer (after switching off truncation/padding) covers vocab,
        # merges, normaliser and pre-tokenizer: anything that could change an ID.
        digest = hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest()
        self._fingerprint = f"hf{digest[:14]}"

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None) -> HFTokenizer:
        file = Path(path)
        if file.is_dir():
            file = file / "tokenizer.json"
        try:
            tok = _HFTokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises bare Exception subclasses
            raise TokenizerError(f"cannot load tokenizer from {file}: {exc}") from exc
        return cls(tok, name or file.parent.name)

    @property
    def name(self) -> str:
        return self._name

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode_batch_sync(self, texts: Sequence[str]) -> list[TokenIds]:
        """Encode without special tokens, in one batch (no offsets: the fast path)."""
        encodings = self._tok.encode_batch_fast(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.uint32) for e in encodings]

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def decode_sync(self, ids: Sequence[int] | TokenIds) -> str:
        return str(self._tok.decode(as_token_ids(ids).tolist(), skip_special_tokens=False))

    async def encode_batch(self, texts: Sequence[str]) -> list[TokenIds]:
        """`encode_batch_sync` in the CPU executor (the Rust encoder releases the GIL)."""
        return await run_cpu(self.encode_batch_sync, texts)

    async def decode(self, ids: Sequence[int] | TokenIds) -> str:
        return await run_cpu(self.decode_sync, ids)

    @property
    def backend(self) -> _HFTokenizer:
        """The wrapped `tokenizers.Tokenizer`, for adapters that need offsets."""
        return self._tok
