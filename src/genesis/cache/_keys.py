"""Content-addressed cache keys: ``{prefix}:{collection}:{fingerprint}:{hash}``."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

# No glob characters and no ':' — a collection's key prefix is then safe as a SCAN MATCH
# pattern and can never be a prefix of another collection's keys.
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HASH = re.compile(r"[0-9a-f]{16,}")
# 128 bits of the SHA-256 keep keys short (Redis stores every key) and collisions unthinkable.
HASH_CHARS = 32


def content_hash(text: str) -> str:
    """Hex SHA-256 of ``text`` — the same address as ``genesis.knowledge.content_hash``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class HashMemo:
    """A bounded memo of ``text -> content_hash(text)[:HASH_CHARS]``.

    A request's chunks repeat across requests, and SHA-256 of a 2 KB chunk costs ~1.5 us
    while a dict lookup by the text costs ~0.06 us when the caller passes the same ``str``
    object (its hash is cached) and ~0.5 us for an equal copy. Keyed by the text itself
    (compared by value), so a hit is always the hash of exactly this text. At most
    ``max_chars`` characters of text are held; the oldest entries go first.
    """

    def __init__(self, max_chars: int = 8 * 1024 * 1024) -> None:
        if max_chars < 0:
            raise ValueError(f"hash memo max_chars must be >= 0, got {max_chars}")
        self._max_chars = max_chars
        self._data: dict[str, str] = {}
        self._chars = 0

    def __len__(self) -> int:
        return len(self._data)

    def hash(self, text: str) -> str:
        """``content_hash(text)[:HASH_CHARS]``, from the memo when it holds ``text``."""
        found = self._data.get(text)
        if found is None:
            found = content_hash(text)[:HASH_CHARS]
            self._remember(text, found)
        return found

    def _remember(self, text: str, digest: str) -> None:
        if len(text) > self._max_chars:
            return
        self._data[text] = digest
        self._chars += len(text)
        while self._chars > self._max_chars:
            oldest = next(iter(self._data))
            del self._data[oldest]
            self._chars -= len(oldest)


def check_name(kind: str, value: str) -> str:
    """Return ``value`` when it is a valid prefix/collection name, else raise ``ValueError``."""
    if not _NAME.fullmatch(value):
        raise ValueError(f"invalid {kind} {value!r}: use 1-64 of [A-Za-z0-9_.-]")
    return value


@lru_cache(maxsize=1024)
def collection_prefix(prefix: str, collection: str) -> str:
    """The key prefix that every key of ``collection`` starts with (ends with ``:``)."""
    return f"{check_name('prefix', prefix)}:{check_name('collection', collection)}:"


def check_hash(value: str) -> str:
    """Return ``value`` when it is a lower-case hex digest (>= 16 chars), else ``ValueError``."""
    if not _HASH.fullmatch(value):
        raise ValueError(f"invalid content hash {value!r}: expected lower-case hex")
    return value


def make_key(collection_prefix: str, fingerprint: str, content_hash: str) -> str:
    """The key of one chunk (``content_hash`` as checked by :func:`check_hash`)."""
    return f"{collection_prefix}{fingerprint}:{content_hash[:HASH_CHARS]}"
