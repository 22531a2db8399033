"""Per-client request rate limits: token buckets, in Redis when configured, else in-process.

One bucket per (scope, client): a client is a key id, or an address for anonymous callers.
A bucket holds at most ``burst`` tokens, refills at ``rate_per_s`` and a request takes one;
an empty bucket refuses with the time until the next token (``Retry-After``).

In Redis the whole read-refill-take-write is one Lua script (EVALSHA, one round trip, atomic
across replicas) on Redis' own clock, so replicas with skewed clocks agree. Redis failing or
slow must not fail requests: the limiter then counts in-process (each replica on its own, so
the effective limit is looser for the outage) and tries Redis again after ``retry_redis_s``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from genesis.config import BucketSettings, RateLimitSettings, Scope, Settings
from genesis.errors import RateLimitExceededError

__all__ = ["BucketStore", "LocalBuckets", "RateLimiter", "RedisBuckets"]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

# KEYS[1]: the bucket; ARGV: rate per second, burst, cost. Returns {allowed, retry_after_s}
# with the float as a string (Lua numbers returned to Redis are truncated to integers).
_TAKE_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(retry)}
"""


class BucketStore(Protocol):
    """Where buckets live.

    Contract: ``take`` atomically refills the bucket ``key`` for the time elapsed, then takes
    ``cost`` tokens if it holds that many; it returns ``0.0`` when it did, else the seconds
    until it would (> 0) and takes nothing. A bucket seen for the first time is full.
    """

    async def take(self, key: str, bucket: BucketSettings, cost: float = 1.0) -> float: ...


class LocalBuckets:
    """In-process buckets, bounded: past ``max_buckets`` the least recently used is dropped
    (it comes back full, which only ever errs on the generous side). One event loop."""

    def __init__(self, max_buckets: int = 10_000, *, clock: Clock = time.monotonic) -> None:
        if max_buckets < 1:
            raise ValueError(f"max_buckets must be >= 1, got {max_buckets}")
        self._max = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def take(self, key: str, bucket: BucketSettings, cost: float = 1.0) -> float:
        return self.take_now(key, bucket, cost)

    def take_now(self, key: str, bucket: BucketSettings, cost: float = 1.0) -> float:
        """:meth:`take` without the coroutine (it never waits)."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(bucket.burst), now))
        tokens = min(float(bucket.burst), tokens + max(0.0, now - last) * bucket.rate_per_s)
        retry = 0.0 if tokens >= cost else (cost - tokens) / bucket.rate_per_s
        self._buckets[key] = (tokens - cost if retry == 0.0 else tokens, now)
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return retry


class RedisBuckets:
    """Buckets as Redis hashes ``{prefix}:{key}``, updated by one Lua script per request.

    Raises redis' errors, ``OSError`` or ``TimeoutError`` (after ``op_timeout_s``): the
    :class:`RateLimiter` falls back on them.
    """

    def __init__(self, client: Redis, *, prefix: str = "grl", op_timeout_s: float = 0.05) -> None:
        self._client = client
        self._prefix = prefix
        self._timeout = op_timeout_s
        # register_script: EVALSHA, and a transparent SCRIPT LOAD once if Redis lost it.
        self._script = client.register_script(_TAKE_LUA)

    async def take(self, key: str, bucket: BucketSettings, cost: float = 1.0) -> float:
        args = [repr(float(bucket.rate_per_s)), str(bucket.burst), repr(float(cost))]
        async with asyncio.timeout(self._timeout):
            reply = await self._script(keys=[f"{self._prefix}:{key}"], args=args)
        try:
            allowed, retry = reply
            return 0.0 if int(allowed) == 1 else max(float(retry), 1e-3)
        except (TypeError, ValueError) as exc:  # counts as a failing Redis: fall back
            raise RedisError(f"unexpected rate-limit script reply {type(reply).__name__}") from exc


class RateLimiter:
    """Refuses a client past its scope's bucket with :class:`RateLimitExceededError`.

    ``redis``: shared buckets (the limiter does not close this client); ``None``: in-process.
    ``shared`` instead of ``redis``: any other :class:`BucketStore` whose failures
    (``RedisError``, ``OSError``, ``TimeoutError``) are treated the same way. While the shared
    store fails, buckets are counted in-process; one warning when that starts, one info line
    when it answers again.
    """

    def __init__(
        self,
        settings: RateLimitSettings,
        *,
        redis: Redis | None = None,
        shared: BucketStore | None = None,
        retry_redis_s: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if redis is not None and shared is not None:
            raise ValueError("give redis or shared, not both")
        self._settings = settings
        self._local = LocalBuckets(settings.max_local_buckets, clock=clock)
        if redis is not None:
            shared = RedisBuckets(redis, prefix=settings.prefix, op_timeout_s=settings.op_timeout_s)
        self._shared = shared
        self._retry_redis_s = retry_redis_s
        self._clock = clock
        self._redis_down_until: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings, redis: Redis | None = None) -> RateLimiter:
        return cls(settings.auth.rate_limits, redis=redis)

    @property
    def enabled(self) -> bool:
        return self._settings.enabled

    @property
    def store(self) -> str:
        """``"redis"`` or ``"local"``: where the next request will be counted."""
        return "redis" if self._use_redis() else "local"

    async def acquire(self, client: str, scope: Scope) -> None:
        """Take one request from ``client``'s ``scope`` bucket, or raise.

        ``client`` is an opaque, bounded identity (``key:<id>``, ``addr:<ip>``), never a key.
        """
        if not self._settings.enabled:
            return
        bucket = self._settings.bucket(scope)
        retry = await self._take(f"{scope}:{client}", bucket)
        if retry > 0:
            raise RateLimitExceededError(
                f"rate limit of the {scope} scope exceeded ({bucket.burst} requests at once, "
                f"{bucket.rate_per_s:g} per second); retry in {retry_after_header(retry)} s",
                retry_after_s=retry,
            )

    async def _take(self, key: str, bucket: BucketSettings) -> float:
        if self._shared is None or not self._use_redis():
            return self._local.take_now(key, bucket)
        try:
            retry = await self._shared.take(key, bucket)
        except (RedisError, OSError, TimeoutError) as exc:
            self._redis_failed(exc)
            return self._local.take_now(key, bucket)
        self._redis_answered()
        return retry

    def _use_redis(self) -> bool:
        if self._shared is None:
            return False
        return self._redis_down_until is None or self._clock() >= self._redis_down_until

    def _redis_failed(self, exc: BaseException) -> None:
        if self._redis_down_until is None:
            logger.warning(
                "rate limits: Redis failed (%s); counting in-process until it answers again",
                type(exc).__name__,
            )
        self._redis_down_until = self._clock() + self._retry_redis_s

    def _redis_answered(self) -> None:
        if self._redis_down_until is not None:
            logger.info("rate limits: Redis answers again; buckets are shared again")
            self._redis_down_until = None


def retry_after_header(retry_after_s: float) -> str:
    """``Retry-After`` takes whole seconds: rounded up, at least 1."""
    return str(max(1, math.ceil(retry_after_s)))
