"""The contract every :class:`genesis.rollout.RolloutStore` passes: subclass with a
``store`` fixture (and a ``clock`` list the store reads time from)."""

from __future__ import annotations

from genesis.rollout import Change, RolloutState, RolloutStore


def _state(agent: str, percent: float, status: str = "running") -> RolloutState:
    return RolloutState(agent, f"{agent}:ft", percent, 0, status, 10.0, 10.0)  # type: ignore[arg-type]


def _change(agent: str, ts: float, to: float, why: str = "because") -> Change:
    return Change(ts, agent, f"{agent}:ft", "set", 0.0, to, "tester", why, {"p": 0.5, "n": [1, 2]})


class RolloutStoreContract:
    def test_missing_agent_has_no_state(self, store: RolloutStore) -> None:
        assert store.state("nobody") is None
        assert store.states() == {}

    def test_apply_writes_state_and_change_together(self, store: RolloutStore) -> None:
        store.apply(_state("a", 10.0), _change("a", 1.0, 10.0))
        store.apply(_state("a", 25.0), _change("a", 2.0, 25.0, "second"))
        store.apply(_state("b", 50.0), _change("b", 3.0, 50.0))
        assert store.state("a") == _state("a", 25.0)
        assert set(store.states()) == {"a", "b"}
        changes = store.changes("a")
        assert [c.to_percent for c in changes] == [25.0, 10.0]  # newest first
        assert changes[0].why == "second"
        assert changes[0].evidence == {"p": 0.5, "n": [1, 2]}
        assert store.changes("a", limit=1) == changes[:1]

    def test_lock_is_held_by_one_holder_until_it_expires(
        self, store: RolloutStore, clock: list[float]
    ) -> None:
        assert store.try_lock("auto", "one", ttl_s=60)
        assert not store.try_lock("auto", "two", ttl_s=60)
        assert store.try_lock("auto", "one", ttl_s=60)  # the holder renews
        clock[0] += 61
        assert store.try_lock("auto", "two", ttl_s=60)  # expired: taken over
        store.unlock("auto", "one")  # not the holder: nothing happens
        assert not store.try_lock("auto", "one", ttl_s=60)
        store.unlock("auto", "two")
        assert store.try_lock("auto", "one", ttl_s=60)
