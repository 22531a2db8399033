"""API keys, scopes and the per-route guard of the HTTP API.

A key is sent as ``Authorization: Bearer <key>`` (what the OpenAI SDK sends). Keys are held
only as SHA-256 digests; a presented key is hashed once and compared with every configured
digest by ``hmac.compare_digest``, without stopping at a match, so the time taken does not
depend on which key matched (key ids never enter the comparison at all).

Scopes: ``query`` (ask, chat, route, search), ``run`` (agent tasks that run code), ``admin``
(cache, ingest, rollout). With no keys configured every caller is the anonymous principal,
which holds ``query`` only; ``run`` and ``admin`` always need a key, and the server may then
only listen on loopback (:func:`check_bind`). With keys configured a request without one is
refused (401).

Routes declare what they need with ``Depends(requires("run"))``; the dependency finds the
:class:`AccessControl` that :meth:`AccessControl.install` put on the app, authenticates,
authorizes, takes one request from the client's rate bucket, and returns the
:class:`Principal` (also left on ``request.state.principal`` for the access log).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, get_args

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis

from genesis.config import ApiKeySettings, AuthSettings, Scope, Settings, redact_url
from genesis.errors import (
    AuthenticationError,
    ConfigError,
    GenesisError,
    PermissionDeniedError,
    RateLimitExceededError,
)
from genesis.server._ratelimit import RateLimiter

__all__ = [
    "ANONYMOUS_SCOPES",
    "SCOPES",
    "AccessControl",
    "Authenticator",
    "Principal",
    "access_log_fields",
    "bearer_scheme",
    "check_bind",
    "hash_api_key",
    "http_error_details",
    "is_loopback",
    "new_api_key",
    "principal_of",
    "requires",
]

logger = logging.getLogger(__name__)

SCOPES: tuple[Scope, ...] = get_args(Scope)
ANONYMOUS_SCOPES: frozenset[Scope] = frozenset({"query"})
KEY_PREFIX = "gk_"  # recognisable in a leaked log (genesis._redact knows it)
_MAX_KEY_CHARS = 512  # longer is no key of ours; refuse before hashing it

# Declares the scheme in /openapi.json (the "Authorize" button of /docs). auto_error=False:
# the guard reads the header itself, so a malformed one is a 401 rather than anonymous.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="GenesisApiKey",
    description="An API key: `Authorization: Bearer <key>`; `genesis keys new` makes one.",
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key id (``None`` when anonymous), its scopes and the client address."""

    key_id: str | None
    scopes: frozenset[Scope]
    client: str = "unknown"

    @property
    def anonymous(self) -> bool:
        return self.key_id is None

    @property
    def name(self) -> str:
        """What logs and metrics show: the key id, or ``anonymous``. Never the key."""
        return self.key_id or "anonymous"

    @property
    def rate_key(self) -> str:
        """The identity rate limits count: the key id, or the address when anonymous."""
        return f"key:{self.key_id}" if self.key_id else f"addr:{self.client}"

    def log_extra(self) -> dict[str, str]:
        return {"key_id": self.name, "client": self.client}


@dataclass(frozen=True, slots=True)
class _StoredKey:
    key_id: str
    digest: bytes = field(repr=False)
    scopes: frozenset[Scope]


def new_api_key() -> str:
    """A fresh key: ``gk_`` and 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """The hex SHA-256 digest that configuration holds (``auth.keys[].sha256``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class Authenticator:
    """Checks presented keys against configured digests; knows nothing of HTTP."""

    def __init__(self, keys: Sequence[ApiKeySettings] = ()) -> None:
        self._keys = tuple(
            _StoredKey(k.id, bytes.fromhex(k.sha256), frozenset(k.scopes)) for k in keys
        )

    @classmethod
    def from_settings(cls, settings: Settings | AuthSettings) -> Authenticator:
        auth = settings.auth if isinstance(settings, Settings) else settings
        return cls(auth.keys)

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    @property
    def key_ids(self) -> list[str]:
        return [k.key_id for k in self._keys]

    def authenticate(self, authorization: str | None, client: str = "unknown") -> Principal:
        """The principal for an ``Authorization`` header value (``None``: no header).

        Raises :class:`AuthenticationError` for a malformed header or an unknown key, and for
        a missing one when keys are configured. Messages never quote the header.
        """
        if not authorization:
            if self._keys:
                raise AuthenticationError(
                    "an API key is required: send it as 'Authorization: Bearer <key>'"
                )
            return Principal(None, ANONYMOUS_SCOPES, client)
        stored = self._lookup(_bearer_token(authorization))
        if stored is None:
            raise AuthenticationError("the API key is not valid")
        return Principal(stored.key_id, stored.scopes, client)

    def authorize(self, principal: Principal, scope: Scope) -> None:
        """Raise unless ``principal`` holds ``scope``: 401 when anonymous (a key would
        help), 403 for a key without it."""
        if scope in principal.scopes:
            return
        if principal.anonymous:
            # Without keys configured no key can help: say so rather than invite guessing.
            hint = (
                "send it as 'Authorization: Bearer <key>'"
                if self._keys
                else "this server has none configured (auth.keys)"
            )
            raise AuthenticationError(f"the {scope} scope needs an API key: {hint}")
        raise PermissionDeniedError(
            f"API key {principal.key_id!r} does not have the {scope} scope", scope
        )

    def _lookup(self, token: str) -> _StoredKey | None:
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found: _StoredKey | None = None
        for stored in self._keys:  # every digest, no early exit: constant time per request
            if hmac.compare_digest(digest, stored.digest):
                found = stored
        return found


def _bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token or len(token) > _MAX_KEY_CHARS:
        raise AuthenticationError(
            "malformed Authorization header: expected 'Authorization: Bearer <key>'"
        )
    return token


class AccessControl:
    """The guard that :func:`requires` consults: authentication, scopes, rate limits.

    Build it once (``AccessControl.from_settings(settings)``), :meth:`install` it on the app
    and :meth:`aclose` it in the lifespan. ``limiter=None`` turns rate limiting off.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        limiter: RateLimiter | None = None,
        *,
        owned_redis: Redis | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.limiter = limiter
        self._owned_redis = owned_redis

    @classmethod
    def from_settings(cls, settings: Settings, redis: Redis | None = None) -> AccessControl:
        """Keys from ``settings.auth``; rate buckets in ``redis`` if given, else in a client
        of ``settings.redis.url`` that this object owns, else in-process."""
        owned = None
        if redis is None and settings.redis.url is not None:
            url = settings.redis.url.get_secret_value()
            logger.info("rate limits: buckets in Redis at %s", redact_url(url))
            owned = redis = Redis.from_url(url, socket_timeout=settings.redis.socket_timeout_s)
        limits_on = settings.auth.rate_limits.enabled
        limiter = RateLimiter.from_settings(settings, redis) if limits_on else None
        return cls(Authenticator.from_settings(settings), limiter, owned_redis=owned)

    def install(self, app: FastAPI) -> None:
        app.state.access_control = self

    async def aclose(self) -> None:
        if self._owned_redis is not None:
            client, self._owned_redis = self._owned_redis, None
            await client.aclose()

    async def check(self, authorization: str | None, client: str, scope: Scope) -> Principal:
        """Authenticate, authorize ``scope``, then take one request from the rate bucket."""
        principal = self.authenticator.authenticate(authorization, client)
        await self.admit(principal, scope)
        return principal

    async def admit(self, principal: Principal, scope: Scope) -> None:
        """Authorize ``scope`` for an authenticated principal and count the request."""
        self.authenticator.authorize(principal, scope)
        if self.limiter is not None:
            await self.limiter.acquire(principal.rate_key, scope)


def requires(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: ``principal: Principal = Depends(requires("run"))``.

    It shows in ``/openapi.json`` as the HTTP bearer scheme ``GenesisApiKey``. Errors are
    :class:`AuthenticationError` (401), :class:`PermissionDeniedError` (403) and
    :class:`RateLimitExceededError` (429); see :func:`http_error_details`.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; scopes are {', '.join(SCOPES)}")

    async def guard(
        request: Request,
        _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> Principal:
        control = _control_of(request)
        principal = control.authenticator.authenticate(_authorization(request), _client(request))
        # Left on the request before the scope and rate checks, so that the access log names
        # the key of a 403 or 429 too.
        request.state.principal = principal
        await control.admit(principal, scope)
        return principal

    guard.__name__ = f"requires_{scope}"
    return guard


def principal_of(request: Request) -> Principal | None:
    """The principal a guard admitted for this request (for the access log), if any."""
    principal = getattr(request.state, "principal", None)
    return principal if isinstance(principal, Principal) else None


def access_log_fields(request: Request) -> dict[str, str]:
    """``{"key_id", "client"}`` for an access-log line: the key id (``anonymous`` when the
    guard admitted a caller without one, ``-`` on routes without a guard), never the key."""
    principal = principal_of(request)
    if principal is not None:
        return principal.log_extra()
    return {"key_id": "-", "client": _client(request)}


def _control_of(request: Request) -> AccessControl:
    control = getattr(request.app.state, "access_control", None)
    if not isinstance(control, AccessControl):
        # A wiring bug, not a client error: fail closed and loudly.
        raise RuntimeError("requires(...) used on an app without AccessControl.install(app)")
    return control


def _authorization(request: Request) -> str | None:
    values = request.headers.getlist("authorization")
    if len(values) > 1:
        raise AuthenticationError("more than one Authorization header")
    return values[0] if values else None


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def http_error_details(exc: GenesisError) -> tuple[int, dict[str, str]] | None:
    """Status code and headers for the errors of this module; ``None`` for any other.

    The errors carry both (``status_code``, ``headers``), which is what the server's error
    handler reads: 401 with ``WWW-Authenticate: Bearer``, 403 naming the missing scope in it
    (RFC 6750), 429 with ``Retry-After`` in whole seconds.
    """
    if isinstance(exc, AuthenticationError | PermissionDeniedError | RateLimitExceededError):
        return exc.status_code, exc.headers
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts local connections.

    Any other name counts as not loopback: it may resolve to a public address.
    """
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: Settings | AuthSettings) -> None:
    """Call before listening on ``host``: without keys, only loopback is allowed.

    Raises :class:`ConfigError` for a non-loopback host without keys; warns that the service
    is anonymous (query scope only) for a loopback host without keys.
    """
    auth = settings.auth if isinstance(settings, Settings) else settings
    if auth.keys:
        ids = ", ".join(k.id for k in auth.keys)
        logger.info("API keys configured (%s); every route needs one", ids)
        return
    if not is_loopback(host):
        raise ConfigError(
            f"server.host is {host!r}, which is not loopback, and auth.keys is empty: refusing "
            "to serve an unauthenticated API beyond this machine. Add keys under auth.keys "
            "(`genesis keys new` makes one) or listen on 127.0.0.1"
        )
    logger.warning(
        "no API keys configured (auth.keys): serving anonymously on loopback %s, query scope "
        "only; run and admin routes refuse every request",
        host,
    )
