"""The automatic mode: on a schedule, the replica holding the database lock evaluates every
running rollout and advances or rolls it back (:meth:`Rollout.tick_locked`)."""

from __future__ import annotations

import asyncio
import logging

from genesis.rollout._service import Rollout

logger = logging.getLogger(__name__)


async def run_auto(rollout: Rollout, interval_s: float) -> None:
    """Tick every ``interval_s`` until cancelled; a failed tick is logged, never fatal."""
    while True:
        try:
            done = await asyncio.to_thread(rollout.tick_locked, "auto")
            if done:
                logger.info("rollout auto: %s", done)
        except Exception:  # a database hiccup (SQLAlchemy) must not end the loop
            logger.exception("rollout auto tick failed; trying again in %.0f s", interval_s)
        await asyncio.sleep(interval_s)
