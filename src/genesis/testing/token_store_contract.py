"""The `TokenStore` contract as a reusable pytest suite.

A backend's tests subclass `TokenStoreContract`, provide a ``store`` fixture and, when the
store has an injectable clock, override `advance` to move it instead of sleeping::

    class TestMyStore(TokenStoreContract):
        @pytest.fixture
        async def store(self):
            store = MyStore()
            yield store
            await store.aclose()
"""

from __future__ import annotations

import asyncio
import math
import uuid

import pytest

from genesis.cache._store import TokenStore

_BINARY = bytes(range(256)) * 4


class TokenStoreContract:
    """Behaviour every `TokenStore` must show. Subclasses supply the ``store`` fixture."""

    async def advance(self, store: TokenStore, seconds: float) -> None:
        """Let ``seconds`` pass for ``store`` (real time unless overridden)."""
        await asyncio.sleep(seconds)

    @pytest.fixture
    def key_prefix(self) -> str:
        """A prefix unique to one test: stores may be shared (Redis)."""
        return f"gtc-{uuid.uuid4().hex[:12]}:"

    async def test_is_a_token_store(self, store: TokenStore) -> None:
        assert isinstance(store, TokenStore)

    async def test_mget_of_nothing_is_empty(self, store: TokenStore) -> None:
        assert await store.mget([]) == []

    async def test_missing_keys_read_as_none(self, store: TokenStore, key_prefix: str) -> None:
        assert await store.mget([key_prefix + "a", key_prefix + "b"]) == [None, None]

    async def test_mset_then_mget_in_order(self, store: TokenStore, key_prefix: str) -> None:
        a, b, c = (key_prefix + k for k in "abc")
        await store.mset({a: b"1", c: _BINARY}, ttl_s=30)
        assert await store.mget([c, b, a]) == [_BINARY, None, b"1"]

    async def test_mset_overwrites(self, store: TokenStore, key_prefix: str) -> None:
        await store.mset({key_prefix + "a": b"old"}, ttl_s=30)
        await store.mset({key_prefix + "a": b"new"}, ttl_s=30)
        assert await store.mget([key_prefix + "a"]) == [b"new"]

    async def test_mset_of_nothing_is_a_no_op(self, store: TokenStore) -> None:
        await store.mset({}, ttl_s=30)

    async def test_ttl_reports_remaining_seconds(self, store: TokenStore, key_prefix: str) -> None:
        await store.mset({key_prefix + "t": b"x"}, ttl_s=30)
        await store.mset({key_prefix + "f": b"x"}, ttl_s=None)
        remaining = await store.ttl(key_prefix + "t")
        assert remaining is not None and 0 < remaining <= 30
        assert await store.ttl(key_prefix + "f") == math.inf
        assert await store.ttl(key_prefix + "absent") is None

    async def test_entries_expire_after_their_ttl(self, store: TokenStore, key_prefix: str) -> None:
        await store.mset({key_prefix + "short": b"x"}, ttl_s=0.2)
        await store.mset({key_prefix + "long": b"y"}, ttl_s=30)
        await self.advance(store, 0.35)
        assert await store.mget([key_prefix + "short", key_prefix + "long"]) == [None, b"y"]
        assert await store.ttl(key_prefix + "short") is None

    async def test_delete_prefix_removes_only_that_prefix(
        self, store: TokenStore, key_prefix: str
    ) -> None:
        keep, drop = key_prefix + "keep:", key_prefix + "drop:"
        await store.mset({drop + str(i): b"x" for i in range(25)}, ttl_s=30)
        await store.mset({keep + "1": b"k"}, ttl_s=30)
        assert await store.delete_prefix(drop) == 25
        assert await store.mget([drop + "3", keep + "1"]) == [None, b"k"]
        assert await store.delete_prefix(drop) == 0

    async def test_delete_prefix_is_literal_not_a_pattern(
        self, store: TokenStore, key_prefix: str
    ) -> None:
        await store.mset({key_prefix + "ab": b"x", key_prefix + "a*": b"y"}, ttl_s=30)
        assert await store.delete_prefix(key_prefix + "a*") == 1
        assert await store.mget([key_prefix + "ab"]) == [b"x"]

    async def test_memory_policy_report_has_the_contract_keys(self, store: TokenStore) -> None:
        report = await store.check_memory_policy()
        assert {"backend", "ok", "warning"} <= set(report)
        assert isinstance(report["ok"], bool)
        assert (report["warning"] is None) == report["ok"]

    async def test_ping_answers(self, store: TokenStore) -> None:
        await store.ping()
