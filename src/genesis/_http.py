"""HTTP plumbing for the inference server: one POST, vendor errors translated.

Shared by the OpenAI-style backends (``genesis.llm``) and the server's own tokenizer
(``genesis.tokens.RemoteTokenizer``); it lives outside both so that ``tokens`` never imports
``llm`` (``llm`` uses ``tokens``' ID type: a one-way dependency).

Every httpx exception and every bad status is turned into the ``genesis.errors`` LLM tree
here, at the edge, so nothing from httpx escapes a backend:

- ``httpx.TimeoutException`` or the overall deadline -> ``LLMTimeoutError``
- 429 -> ``LLMRateLimitError``; 5xx, unreadable JSON, connection errors -> ``LLMServerError``
- any other 4xx -> ``LLMBadRequestError``

Messages name the endpoint path and model, never the base URL (it may carry credentials) nor
the API key.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from pydantic import SecretStr

from genesis.config import redact_url
from genesis.errors import (
    ConfigError,
    LLMBadRequestError,
    LLMRateLimitError,
    LLMServerError,
    LLMTimeoutError,
)

_EXCERPT_CHARS = 500


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
    if timeout_s <= 0:
        raise LLMTimeoutError(f"{what}: no time left (timeout {timeout_s:.3f}s)")
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.post(url, json=payload, headers=headers, timeout=timeout_s)
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise LLMTimeoutError(f"{what}: no answer within {timeout_s:.2f}s") from exc
    except httpx.HTTPError as exc:  # connection refused/reset, protocol errors
        raise LLMServerError(f"{what}: transport error {type(exc).__name__}: {exc}") from exc
    return decode_response(response, what)


def decode_response(response: httpx.Response, what: str) -> dict[str, Any]:
    """Map the status to the error tree, then parse the JSON object body."""
    status = response.status_code
    if status == 408:
        raise LLMTimeoutError(f"{what}: the server timed out (408): {_excerpt(response)}")
    if status == 429:
        raise LLMRateLimitError(f"{what}: rate limited (429): {_excerpt(response)}")
    if status >= 500:
        raise LLMServerError(f"{what}: server error {status}: {_excerpt(response)}")
    if status >= 400:
        raise LLMBadRequestError(f"{what}: rejected with {status}: {_excerpt(response)}")
    if status != 200:
        raise LLMServerError(f"{what}: unexpected status {status}")
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LLMServerError(f"{what}: unreadable JSON body: {_excerpt(response)}") from exc
    if not isinstance(body, dict):
        raise LLMServerError(f"{what}: expected a JSON object, got {type(body).__name__}")
    return body


def first_choice(body: dict[str, Any], what: str) -> dict[str, Any]:
    """``body["choices"][0]``, or ``LLMServerError`` naming what is missing."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise LLMServerError(f"{what}: response has no choices: {str(body)[:_EXCERPT_CHARS]}")
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
        raise LLMServerError(f"unreadable usage in the response: {usage!r:.200}") from exc


def _excerpt(response: httpx.Response) -> str:
    try:
        text = response.text
    except UnicodeDecodeError:
        return "<undecodable body>"
    return text[:_EXCERPT_CHARS] if text else "<empty body>"
