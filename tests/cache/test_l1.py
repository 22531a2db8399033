"""`L1Cache`: LRU bounded by bytes, counting evictions."""

from __future__ import annotations

import numpy as np
import pytest

from genesis.cache import L1Cache
from genesis.cache._l1 import ENTRY_OVERHEAD_BYTES


def _ids(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.uint16)


def test_bytes_bound_evicts_least_recently_used() -> None:
    entry = 100 * 2 + ENTRY_OVERHEAD_BYTES
    l1 = L1Cache(max_bytes=3 * entry)
    for key in "abc":
        l1.put(key, _ids(100))
    assert l1.get("a") is not None  # "b" is now the least recently used
    l1.put("d", _ids(100))
    assert l1.get("b") is None
    assert [k for k in "acd" if l1.get(k) is not None] == ["a", "c", "d"]
    assert l1.evictions == 1 and l1.bytes == 3 * entry and len(l1) == 3


def test_hits_return_the_stored_array_read_only() -> None:
    l1 = L1Cache()
    ids = _ids(10)
    l1.put("k", ids)
    hit = l1.get("k")
    assert hit is ids and not hit.flags.writeable


def test_an_entry_larger_than_the_bound_is_not_kept() -> None:
    l1 = L1Cache(max_bytes=100)
    l1.put("big", _ids(1000))
    assert l1.get("big") is None and l1.bytes == 0


def test_replacing_and_deleting_keep_the_byte_count_exact() -> None:
    l1 = L1Cache()
    l1.put("c1:a", _ids(10))
    l1.put("c1:a", _ids(20))
    l1.put("c2:a", _ids(30))
    assert l1.bytes == 50 * 2 + 2 * ENTRY_OVERHEAD_BYTES
    assert l1.delete_prefix("c1:") == 1
    assert l1.bytes == 30 * 2 + ENTRY_OVERHEAD_BYTES and l1.get("c2:a") is not None


def test_negative_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        L1Cache(max_bytes=-1)
