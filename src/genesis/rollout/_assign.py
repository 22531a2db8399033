"""Sticky, monotone assignment of units to variants.

A unit's bucket is ``HMAC-SHA256(secret, experiment + "\\0" + unit) mod 10,000``; it is on the
fine-tuned variant when ``bucket < percent * 100``. The bucket never changes, so a unit keeps
its variant while the percentage stands still, and raising the percentage only adds buckets
to the fine-tuned side: units move baseline -> fine-tuned, never back (until a rollback).
The key keeps the mapping private: without the secret nobody can pick user ids that land on
one side.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from genesis.events import UnitKind, Variant

BUCKETS = 10_000
FORCED_BUCKET = -1  # a forced unit has no bucket: it is not part of the randomized split


@dataclass(frozen=True, slots=True)
class Unit:
    """What is randomized: a user, else a session, else the single request."""

    kind: UnitKind
    id: str


@dataclass(frozen=True, slots=True)
class Assignment:
    """One unit's variant in one experiment. ``experiment`` is None when the agent has no
    fine-tuned model (nothing to roll out); a forced unit's experiment carries ``:forced`` so
    that its requests stay out of the statistics of the randomized split."""

    unit: Unit
    experiment: str | None
    variant: Variant
    bucket: int
    percent: float

    def as_dict(self) -> dict[str, object]:
        return {
            "unit": self.unit.id,
            "unit_kind": self.unit.kind,
            "experiment": self.experiment,
            "variant": self.variant,
            "bucket": self.bucket,
        }


def unit_for(user_id: str | None, session_id: str | None, request_id: str) -> Unit:
    if user_id:
        return Unit("user", user_id)
    if session_id:
        return Unit("session", session_id)
    return Unit("request", request_id)


def experiment_name(agent: str, finetuned_model: str) -> str:
    """One experiment per agent and fine-tuned model: a new model starts a fresh split and
    fresh statistics, with no events of the previous one mixed in."""
    return f"{agent}:{finetuned_model}"


class Assigner:
    """Buckets units with a keyed hash; ``forced`` pins named users to a variant."""

    def __init__(self, secret: bytes, forced: Mapping[str, Variant] | None = None) -> None:
        if not secret:
            raise ValueError("the assignment secret must not be empty")
        self._secret = secret
        self._forced = dict(forced or {})

    def bucket(self, experiment: str, unit_id: str) -> int:
        message = f"{experiment}\0{unit_id}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        # 64 bits mod 10,000: the modulo bias is below 1e-15, far under sampling noise.
        return int.from_bytes(digest[:8], "big") % BUCKETS

    def assign(self, experiment: str | None, unit: Unit, percent: float) -> Assignment:
        forced = self._forced.get(unit.id) if unit.kind == "user" else None
        if experiment is None:
            return Assignment(unit, None, "baseline", FORCED_BUCKET, 0.0)
        if forced is not None:
            return Assignment(unit, f"{experiment}:forced", forced, FORCED_BUCKET, percent)
        bucket = self.bucket(experiment, unit.id)
        variant: Variant = "finetuned" if bucket < threshold(percent) else "baseline"
        return Assignment(unit, experiment, variant, bucket, percent)

    def assign_many(
        self, experiment: str | None, unit_ids: Iterable[str], percent: float
    ) -> list[Assignment]:
        return [self.assign(experiment, Unit("user", u), percent) for u in unit_ids]


def threshold(percent: float) -> int:
    """Buckets on the fine-tuned side for ``percent`` (0.01% resolution)."""
    return max(0, min(BUCKETS, round(percent * BUCKETS / 100)))
