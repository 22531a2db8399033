"""`L1Cache`: the in-process LRU of decoded token arrays, bounded by bytes."""

from __future__ import annotations

from collections import OrderedDict

from genesis.tokens import TokenIds

# Measured: a small 1-D numpy array object is ~112 bytes, an OrderedDict slot plus a ~60-char
# key str ~150 bytes. Counting them keeps "64 MiB" honest for small chunks.
ENTRY_OVERHEAD_BYTES = 256


class L1Cache:
    """LRU of ``key -> TokenIds`` whose size (``ids.nbytes`` + ``ENTRY_OVERHEAD_BYTES`` per
    entry) never exceeds ``max_bytes``. Arrays are stored read-only and returned as they are,
    so a hit costs no decoding and no copy. ``max_bytes=0`` disables it.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        if max_bytes < 0:
            raise ValueError(f"l1 max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, TokenIds] = OrderedDict()
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> TokenIds | None:
        ids = self._data.get(key)
        if ids is not None:
            self._data.move_to_end(key)
        return ids

    def put(self, key: str, ids: TokenIds) -> None:
        """Insert (or refresh) ``key``; evicts least recently used entries to fit."""
        self.discard(key)
        size = _size(ids)
        if size > self.max_bytes:
            return
        if ids.flags.writeable:
            ids.setflags(write=False)
        self._data[key] = ids
        self.bytes += size
        while self.bytes > self.max_bytes:
            self.discard(next(iter(self._data)))
            self.evictions += 1

    def discard(self, key: str) -> bool:
        ids = self._data.pop(key, None)
        if ids is None:
            return False
        self.bytes -= _size(ids)
        return True

    def delete_prefix(self, prefix: str) -> int:
        doomed = [key for key in self._data if key.startswith(prefix)]
        for key in doomed:
            self.discard(key)
        return len(doomed)

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0


def _size(ids: TokenIds) -> int:
    return int(ids.nbytes) + ENTRY_OVERHEAD_BYTES
