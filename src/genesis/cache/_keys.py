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
