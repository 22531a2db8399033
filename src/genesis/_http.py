"""HTTP plumbing for the inference server: one POST, vendor errors translated.

Shared by the OpenAI-style backends (``genesis.llm``) and the server's own tokenizer
(``genesis.tokens.RemoteTokenizer``); it lives outside both so that ``tokens`` never imports
``llm`` (``llm`` uses ``tokens``' ID type: a one-way dependency).

A backend's completions calls go through aiohttp (:func:`post_json_aio`), everything else
(streams, the readiness ping, the remote tokenizer, a client a caller injects) through httpx
(:func:`post_json`). Every exception of either client and every bad status is turned into the
``genesis.errors`` LLM tree here, at the edge, so nothing from either escapes a backend:

- a client timeout or the overall deadline -> ``LLMTimeoutError``
- 429 -> ``LLMRateLimitError``; 5xx, unreadable JSON, connection errors -> ``LLMServerError``
- any other 4xx -> ``LLMBadRequestError``

Messages name the endpoint path, model and status, never the base URL (it may carry
credentials), the API key, nor anything the upstream sent: an error body may reflect the
request's headers (the key with them), so it goes only to the log, redacted and truncated
(:func:`genesis._redact.redact_excerpt`), and exception messages stay safe to show a client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import socket
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
from pydantic import SecretStr

from genesis._redact import redact_excerpt
from genesis.config import redact_url
from genesis.errors import (
    ConfigError,
    LLMBadRequestError,
    LLMRateLimitError,
    LLMServerError,
    LLMTimeoutError,
)

if TYPE_CHECKING:  # aiohttp is imported when a backend makes its first call
    import aiohttp

logger = logging.getLogger(__name__)

_EXCERPT_CHARS = 300
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})


def normalize_base_url(base_url: str) -> str:
    """``http://h:8000/v1/`` -> ``http://h:8000``: endpoints add their own ``/v1`` prefix.

    vLLM serves ``/tokenize`` at the root but ``/v1/completions`` under ``/v1``, and
    OpenAI-style settings often carry the ``/v1`` suffix, so both spellings are accepted.
    """
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        shown = redact_url(url)[:60]
        raise ConfigError(f"base_url must start with http:// or https://, got {shown!r}")
    return url.removesuffix("/v1")


def secret_value(api_key: SecretStr | str | None) -> str | None:
    """The plain key, or None when there is none (an empty string counts as none)."""
    value = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    return value or None


def auth_headers(api_key: SecretStr | str | None) -> dict[str, str]:
    key = secret_value(api_key)
    return {"Authorization": f"Bearer {key}"} if key else {}


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    *,
    timeout_s: float,
    headers: dict[str, str],
    what: str,
) -> dict[str, Any]:
    """POST ``payload`` as JSON and return the decoded JSON object.

    ``timeout_s`` bounds the whole call: httpx timeouts are per phase (connect, write, each
    read), so a server that drips bytes could otherwise exceed it; ``asyncio.timeout`` caps
    the total. ``what`` names the call in error messages (e.g. ``"POST /v1/completions"``).
    """
    known = _header_secrets(headers)
    async with _bounded(what, timeout_s, known, (httpx.TimeoutException,), httpx.HTTPError):
        response = await client.post(url, json=payload, headers=headers, timeout=timeout_s)
    return decode_response(response, what, known=known)


async def post_json_aio(
    session: aiohttp.ClientSession,
    url: str,
    payload: dict[str, Any],
    *,
    timeout_s: float,
    headers: dict[str, str],
    what: str,
    proxy: str | None = None,
) -> dict[str, Any]:
    """:func:`post_json` on an aiohttp session (:func:`new_session`): the same bound on the
    whole call and the same error tree, for a fraction of httpx's CPU per call.

    ``benchmarks/model_client.py`` compares the two clients' CPU per call in one run. That
    CPU is the event loop's: the model call of every request runs on it.

    A call the server hangs up on before answering is sent once more, within the same
    deadline, on a new connection: aiohttp reuses a pooled connection without first checking
    that the server has not closed it (a server that went away, or closed an idle connection
    that instant), where httpx polls each one. The second try then tells a server that is
    gone (a refused connection, which marks a replica down) from one that is up.
    """
    import aiohttp

    known = _header_secrets(headers)
    async with _bounded(what, timeout_s, known, (), aiohttp.ClientError):
        for attempt in (1, 2):
            try:
                async with session.post(
                    url, json=payload, headers=headers, proxy=proxy
                ) as response:
                    status, content = response.status, await response.read()
                break
            except aiohttp.ServerDisconnectedError:
                if attempt == 2:
                    raise
                logger.debug("%s: the server hung up before answering; sent again", what)
    return decode_body(status, content, what, known=known)


@contextlib.asynccontextmanager
async def _bounded(
    what: str,
    timeout_s: float,
    known: Sequence[str],
    timeouts: tuple[type[BaseException], ...],
    transport: type[BaseException],
) -> AsyncIterator[None]:
    """One call within ``timeout_s`` in all, its client's errors turned into the LLM tree:
    a timeout (the client's ``timeouts`` or the overall deadline) -> ``LLMTimeoutError``;
    a ``transport`` error (refused, reset, bad HTTP) -> ``LLMServerError`` naming only the
    type (client messages can name the URL; the message goes to the log, redacted)."""
    if timeout_s <= 0:
        raise LLMTimeoutError(f"{what}: no time left (timeout {timeout_s:.3f}s)")
    timed_out: tuple[type[BaseException], ...] = (TimeoutError, *timeouts)
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except timed_out as exc:
        raise LLMTimeoutError(f"{what}: no answer within {timeout_s:.2f}s") from exc
    except transport as exc:
        _log_upstream(what, f"transport error {type(exc).__name__}", str(exc), known)
        raise LLMServerError(f"{what}: transport error ({type(exc).__name__})") from exc


def without_userinfo(base_url: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """``base_url`` without ``user:password@``, and the headers with those credentials as
    HTTP basic auth unless an Authorization header is already there (the API key wins), as
    httpx treats a URL's credentials; aiohttp refuses a URL carrying them beside such a header.
    """
    parts = urlsplit(base_url)
    if parts.username is None and parts.password is None:
        return base_url, headers
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    bare = urlunsplit(parts._replace(netloc=netloc))
    if any(k.lower() == "authorization" for k in headers):
        return bare, headers
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    token = base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return bare, {**headers, "Authorization": f"Basic {token}"}


def is_connect_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` (an LLMError's cause) means the server refused or was unreachable,
    from either client."""
    if isinstance(exc, httpx.ConnectError):
        return True
    import aiohttp  # only on a failed call: not imported with this module

    return isinstance(exc, aiohttp.ClientConnectorError)


def decode_response(
    response: httpx.Response, what: str, *, known: Sequence[str] = ()
) -> dict[str, Any]:
    """Map the status to the error tree, then parse the JSON object body.

    ``known``: the secrets this call sent (its API key), also removed verbatim from the log.
    """
    return decode_body(response.status_code, response.content, what, known=known)


def decode_body(
    status: int, content: bytes, what: str, *, known: Sequence[str] = ()
) -> dict[str, Any]:
    """:func:`decode_response` for a status and body read by any client."""
    if status != 200:
        raise _status_error(status, content, what, known)
    try:
        body = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        _log_upstream(what, "unreadable JSON body", _body_text(content), known)
        raise LLMServerError(f"{what}: upstream returned an unreadable JSON body") from exc
    if not isinstance(body, dict):
        raise LLMServerError(f"{what}: expected a JSON object, got {type(body).__name__}")
    return body


def _status_error(status: int, content: bytes, what: str, known: Sequence[str]) -> Exception:
    """The error for a non-200 status; the body is logged (redacted), never put in it."""
    _log_upstream(what, f"upstream returned {status}", _body_text(content), known)
    if status == 408:
        return LLMTimeoutError(f"{what}: upstream returned 408 (timed out)")
    if status == 429:
        return LLMRateLimitError(f"{what}: upstream returned 429 (rate limited)")
    if status >= 500:
        return LLMServerError(f"{what}: upstream returned {status}")
    if status >= 400:
        return LLMBadRequestError(f"{what}: upstream returned {status} (request rejected)")
    return LLMServerError(f"{what}: upstream returned unexpected status {status}")


def first_choice(body: dict[str, Any], what: str) -> dict[str, Any]:
    """``body["choices"][0]``, or ``LLMServerError`` naming what is missing."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        _log_upstream(what, "response has no choices", str(body))
        raise LLMServerError(f"{what}: upstream response has no choices")
    return choices[0]


def usage_counts(
    body: dict[str, Any], prompt_default: int, completion_default: int
) -> tuple[int, int]:
    """``(prompt_tokens, completion_tokens)`` from ``body["usage"]``, defaults when absent."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return prompt_default, completion_default
    prompt = usage.get("prompt_tokens", prompt_default)
    completion = usage.get("completion_tokens", completion_default)
    try:
        return int(prompt), int(completion)
    except (TypeError, ValueError) as exc:
        _log_upstream("usage", "unreadable usage", repr(usage))
        raise LLMServerError("upstream response has unreadable usage counts") from exc


def _body_text(content: bytes) -> str:
    return content.decode("utf-8", "replace")


def _header_secrets(headers: Mapping[str, str]) -> list[str]:
    """The credentials among the headers sent: ``Bearer k`` -> ``k``."""
    values = (v for k, v in headers.items() if k.lower() in _SECRET_HEADERS)
    return [v.split(" ", 1)[-1] for v in values]


def _log_upstream(what: str, problem: str, detail: str, known: Sequence[str] = ()) -> None:
    """Log what the upstream sent, for operators: redacted, truncated, on one line."""
    logger.warning(
        "%s: %s: %s",
        what,
        problem,
        redact_excerpt(detail, _EXCERPT_CHARS, known),
        extra={"upstream_problem": problem},
    )


def new_session() -> aiohttp.ClientSession:
    """The aiohttp session for the model's completions calls (:func:`post_json_aio`).

    Made inside the running loop it will serve. Its idle connections expire after 4 s, before
    uvicorn's (and so vLLM's) 5 s keep-alive timeout, so a call is not sent on a connection
    the server is closing; TCP_NODELAY is aiohttp's default. The proxy variables are not read
    here but once per backend (:func:`env_proxy`), and given with each call.
    """
    import aiohttp

    connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=4.0)
    # trust_env would read the proxy variables on every call (a visible part of its CPU per
    # call): the backend resolves its proxy once instead (env_proxy).
    return aiohttp.ClientSession(connector=connector, trust_env=False)


def env_proxy(url: str) -> str | None:
    """The proxy the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
    ``NO_PROXY``) sets for ``url``, as httpx would use it; None for a direct connection."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


def new_client() -> httpx.AsyncClient:
    """The HTTP client for inference servers: TCP_NODELAY on every connection.

    httpx writes a request's headers and body in separate sends; with Nagle's algorithm on,
    the body of a prompt of token IDs waited for the server's delayed ACK (measured here on
    loopback: a completions call to a server that answers at once took 49 ms, 40 of them
    that wait).
    """
    options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(socket_options=options))
