"""Backends for OpenAI-compatible servers: vLLM completions with token IDs, and chat.

API checked against vLLM's own protocol models (repo vllm-project/vllm):
- ``vllm/entrypoints/openai/completion/protocol.py``: ``CompletionRequest.prompt`` accepts
  ``list[int]`` (token IDs) as well as text; ``return_token_ids: bool`` makes each
  ``CompletionResponseChoice`` carry ``prompt_token_ids`` and ``token_ids``; the response has
  ``usage`` (``UsageInfo``: ``prompt_tokens``, ``completion_tokens``, ``total_tokens``).
- Chat (``/v1/chat/completions``) takes ``messages`` as text and answers
  ``choices[0].message.content``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Self

import httpx
from pydantic import SecretStr

from genesis._http import (
    auth_headers,
    decode_response,
    env_proxy,
    first_choice,
    new_client,
    new_session,
    normalize_base_url,
    post_json,
    post_json_aio,
    usage_counts,
    without_userinfo,
)
from genesis.config import redact_url
from genesis.errors import LLMBadRequestError, LLMServerError
from genesis.llm._stream import (
    StreamDelta,
    chat_text,
    completion_text,
    delta_of,
    merged,
    sse_json_events,
)
from genesis.llm._types import Generation, GenerationRequest, Usage

if TYPE_CHECKING:  # imported with the first call (genesis._http.new_session)
    import aiohttp

logger = logging.getLogger(__name__)


class _OpenAIStyleBackend:
    """Client ownership and auth shared by both backends.

    An injected ``client`` is borrowed (the caller closes it) and serves every call.
    Otherwise the clients are built on first use and closed by :meth:`aclose`: an aiohttp
    session for ``generate`` (the call every answer makes, on the event loop's thread: aiohttp
    costs it a fraction of httpx's CPU, ``benchmarks/model_client.py``) and an httpx client
    for streams and the readiness ping. The backend stays usable after ``aclose`` (new
    clients are built), which lets a sync wrapper release connections tied to its event loop.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: SecretStr | str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._base_url = normalize_base_url(base_url)
        self._headers = auth_headers(api_key)
        self._owns_client = client is None
        self._client = client
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._aio_base, self._aio_headers = without_userinfo(self._base_url, self._headers)
        self._aio_proxy = env_proxy(self._aio_base)

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(base_url={redact_url(self._base_url)!r})"

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._session_loop is asyncio.get_running_loop():
            await session.close()  # a session of a loop that has ended goes with that loop
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _aio(self) -> aiohttp.ClientSession:
        """The aiohttp session of the running loop (a session serves only the loop it was
        made in; one left by a loop that has ended is dropped, its connections with it)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session, self._session_loop = new_session(), loop
        return self._session

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_client()
        return self._client

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def ping(self) -> dict[str, Any]:
        """Readiness: ``GET /v1/models`` (vLLM and OpenAI-style APIs serve it; it costs no
        generation). Returns the number of models listed; raises ``LLMError`` as ``generate``
        does. The caller bounds the time (the readiness check's timeout)."""
        what = "GET /v1/models"
        try:
            response = await self._http().get(f"{self._base_url}/v1/models", headers=self._headers)
        except httpx.HTTPError as exc:
            raise LLMServerError(f"{what}: transport error ({type(exc).__name__})") from exc
        body = decode_response(response, what)
        data = body.get("data")
        return {"models": len(data) if isinstance(data, list) else None}

    async def _post(self, path: str, payload: dict[str, Any], request: GenerationRequest) -> Any:
        what = f"POST {path} (model {request.model!r})"
        if self._owns_client:
            return await post_json_aio(
                self._aio(),
                f"{self._aio_base}{path}",
                payload,
                timeout_s=request.timeout_s,
                headers=self._aio_headers,
                what=what,
                proxy=self._aio_proxy,
            )
        return await post_json(
            self._http(),
            f"{self._base_url}{path}",
            payload,
            timeout_s=request.timeout_s,
            headers=self._headers,
            what=what,
        )

    async def _stream(
        self,
        path: str,
        payload: dict[str, Any],
        request: GenerationRequest,
        text_of: Callable[[dict[str, Any]], Any],
    ) -> AsyncGenerator[StreamDelta, None]:
        what = f"POST {path} (model {request.model!r}, stream)"
        events = sse_json_events(
            self._http(),
            f"{self._base_url}{path}",
            {**payload, "stream": True, "stream_options": {"include_usage": True}},
            timeout_s=request.timeout_s,
            headers=self._headers,
            what=what,
        )

        async def deltas() -> AsyncIterator[StreamDelta]:
            async for event in events:
                delta = delta_of(event, text_of, what)
                if delta is not None:
                    yield delta

        async for delta in merged(deltas()):
            yield delta


class CompletionsBackend(_OpenAIStyleBackend):
    """vLLM ``/v1/completions`` with the prompt sent as token IDs (no re-tokenization)."""

    @property
    def name(self) -> str:
        return "completions"

    async def generate(self, request: GenerationRequest) -> Generation:
        """Send ``request.prompt_ids``; refuse a request that has none."""
        payload = completions_payload(request)
        body = await self._post("/v1/completions", payload, request)
        return _completion_generation(body, request, len(payload["prompt"]))

    def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        """The same call with ``stream: true``: vLLM's own stream, piece by piece."""
        payload = completions_payload(request)
        payload.pop("return_token_ids")  # per-piece IDs are not needed to relay text
        return self._stream("/v1/completions", payload, request, completion_text)


class ChatBackend(_OpenAIStyleBackend):
    """``/v1/chat/completions`` with text messages, for APIs that take no token IDs."""

    @property
    def name(self) -> str:
        return "chat"

    async def generate(self, request: GenerationRequest) -> Generation:
        body = await self._post("/v1/chat/completions", chat_payload(request), request)
        return _chat_generation(body, request)

    def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        return self._stream("/v1/chat/completions", chat_payload(request), request, chat_text)


def chat_payload(request: GenerationRequest) -> dict[str, Any]:
    """The JSON body for ``/v1/chat/completions``: the prompt as text messages."""
    if not request.messages:
        raise LLMBadRequestError("ChatBackend needs request.messages; got none")
    return {
        "model": request.model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        **({"stop": list(request.stop)} if request.stop else {}),
    }


def completions_payload(request: GenerationRequest) -> dict[str, Any]:
    """The JSON body for ``/v1/completions``; the prompt is the token IDs as a list."""
    if request.prompt_ids is None or len(request.prompt_ids) == 0:
        raise LLMBadRequestError(
            "CompletionsBackend sends the prompt as token IDs but request.prompt_ids is "
            "empty or None; assemble the prompt in token space or use ChatBackend for text"
        )
    return {
        "model": request.model,
        "prompt": request.prompt_ids.tolist(),
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "return_token_ids": True,
        **({"stop": list(request.stop)} if request.stop else {}),
    }


def _completion_generation(
    body: dict[str, Any], request: GenerationRequest, prompt_len: int
) -> Generation:
    what = f"POST /v1/completions (model {request.model!r})"
    choice = first_choice(body, what)
    text = _text_field(choice, "text", what)
    token_ids = choice.get("token_ids")
    try:
        completion_ids = [int(t) for t in token_ids] if isinstance(token_ids, list) else None
    except (TypeError, ValueError) as exc:
        raise LLMServerError(f"{what}: token_ids are not integers") from exc
    prompt_tokens, completion_tokens = usage_counts(
        body, prompt_len, len(completion_ids) if completion_ids is not None else 0
    )
    return Generation(
        text=text,
        model=str(body.get("model") or request.model),
        usage=Usage(prompt_tokens, completion_tokens),
        finish_reason=str(choice.get("finish_reason") or "stop"),
        completion_ids=completion_ids,
    )


def _chat_generation(body: dict[str, Any], request: GenerationRequest) -> Generation:
    what = f"POST /v1/chat/completions (model {request.model!r})"
    message = first_choice(body, what).get("message")
    if not isinstance(message, dict):
        raise LLMServerError(f"{what}: choice has no message object")
    prompt_tokens, completion_tokens = usage_counts(body, 0, 0)
    return Generation(
        text=_text_field(message, "content", what),
        model=str(body.get("model") or request.model),
        usage=Usage(prompt_tokens, completion_tokens),
        finish_reason=str(first_choice(body, what).get("finish_reason") or "stop"),
    )


def _text_field(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        # The value itself came from the upstream: only its type goes in the message.
        raise LLMServerError(
            f"{what}: upstream response field {key!r} is not text ({type(value).__name__})"
        )
    return value
