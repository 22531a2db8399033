"""Streaming generation: the backends' ``stream()`` and the server-sent-event reader under it.

An OpenAI-compatible server (vLLM, OpenAI) streams ``data: {json}`` events ending with
``data: [DONE]``; with ``stream_options.include_usage`` the last event before ``[DONE]`` has
empty ``choices`` and the usage. A backend turns that into :class:`StreamDelta` items: text
pieces in order, and a last item carrying ``finish_reason`` and ``usage``.

Errors are translated at this edge as in :mod:`genesis._http`: a bad status before the
stream starts maps to the same ``LLMError`` subclasses; a transport failure, a timeout
between two events or an ``{"error": ...}`` event in the middle is an ``LLMServerError`` or
``LLMTimeoutError``. Nothing from httpx escapes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from genesis.errors import LLMServerError, LLMTimeoutError
from genesis.llm._types import GenerationRequest, Usage

if TYPE_CHECKING:  # httpx is imported when a stream is opened (see genesis.llm)
    import httpx

logger = logging.getLogger(__name__)

_DONE = "[DONE]"


@dataclass(slots=True)
class StreamDelta:
    """One piece of a streamed answer. The last piece of a stream carries ``finish_reason``
    (and ``usage`` when the server reported it); its ``text`` may be empty."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None


@runtime_checkable
class StreamingBackend(Protocol):
    """A backend that can also stream. Contract: ``stream`` yields :class:`StreamDelta` in
    order and raises only ``LLMError`` subclasses, like ``generate``; the HTTP call starts
    on the first ``__anext__`` (so a registry can time and retry the first piece)."""

    @property
    def name(self) -> str: ...

    def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamDelta, None]: ...


async def sse_json_events(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    *,
    timeout_s: float,
    headers: dict[str, str],
    what: str,
) -> AsyncIterator[dict[str, Any]]:
    """POST ``payload`` and yield each ``data:`` event's JSON object until ``[DONE]``.

    ``timeout_s`` bounds the connection and each wait for the next bytes (a stream's total
    length is the model's business; a stalled one is cut).
    """
    import httpx

    from genesis._http import decode_response

    try:
        async with client.stream(
            "POST", url, json=payload, headers=headers, timeout=timeout_s
        ) as response:
            if response.status_code != 200:
                await response.aread()
                decode_response(response, what)  # raises the mapped LLMError
            async for data in _data_fields(response):
                if data == _DONE:
                    return
                yield _event_object(data, what)
    except httpx.TimeoutException as exc:
        raise LLMTimeoutError(f"{what}: stream stalled for over {timeout_s:.2f}s") from exc
    except httpx.HTTPError as exc:
        raise LLMServerError(f"{what}: stream broke ({type(exc).__name__})") from exc


async def _data_fields(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each event (several ``data:`` lines joined by newlines)."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        if line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
    if lines:
        yield "\n".join(lines)


def _event_object(data: str, what: str) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except json.JSONDecodeError as exc:
        raise LLMServerError(f"{what}: unreadable stream event") from exc
    if not isinstance(event, dict):
        raise LLMServerError(f"{what}: stream event is not a JSON object")
    if event.get("error"):
        # The upstream's message may echo the request: only the fact goes to the client.
        logger.warning("%s: upstream sent an error event", what)
        raise LLMServerError(f"{what}: upstream reported an error mid-stream")
    return event


def delta_of(
    event: dict[str, Any], text_of: Callable[[dict[str, Any]], Any], what: str
) -> StreamDelta | None:
    """The :class:`StreamDelta` of one chunk event, None when it carries nothing.

    ``text_of`` reads a choice's text (``choice["text"]`` for completions,
    ``choice["delta"]["content"]`` for chat).
    """
    usage = _usage(event.get("usage"))
    choices = event.get("choices") or []
    choice = choices[0] if isinstance(choices, list) and choices else {}
    if not isinstance(choice, dict):
        raise LLMServerError(f"{what}: stream choice is not an object")
    text = text_of(choice) or ""
    if not isinstance(text, str):
        raise LLMServerError(f"{what}: stream text is not a string")
    finish = choice.get("finish_reason")
    if not text and finish is None and usage is None:
        return None
    model = event.get("model")
    return StreamDelta(text, finish, usage, model if isinstance(model, str) else None)


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    try:
        return Usage(int(value.get("prompt_tokens", 0)), int(value.get("completion_tokens", 0)))
    except (TypeError, ValueError) as exc:
        raise LLMServerError("stream usage counts are unreadable") from exc


def completion_text(choice: dict[str, Any]) -> Any:
    return choice.get("text")


def chat_text(choice: dict[str, Any]) -> Any:
    delta = choice.get("delta")
    return delta.get("content") if isinstance(delta, dict) else None


async def merged(events: AsyncIterator[StreamDelta]) -> AsyncIterator[StreamDelta]:
    """Text pieces as they come (never held back: the first one ends the registry's
    fallback window), then ONE last item with the finish reason and the usage, wherever in
    the stream the server put them."""
    usage: Usage | None = None
    finish: str | None = None
    model: str | None = None
    async for delta in events:
        usage = delta.usage or usage
        finish = delta.finish_reason or finish
        model = delta.model or model
        if delta.text:
            yield StreamDelta(delta.text, model=delta.model)
    yield StreamDelta("", finish or "stop", usage, model)


@dataclass(slots=True)
class OpenedStream:
    """A stream whose first piece has arrived: from here on the model is fixed (no fallback
    once a client may have seen text); errors come out of :meth:`rest` as ``LLMError``."""

    model: str
    first: StreamDelta
    _rest: AsyncGenerator[StreamDelta, None] | None
    fell_back: bool = False

    async def rest(self) -> AsyncIterator[StreamDelta]:
        if self._rest is None:
            return
        try:
            async for delta in self._rest:
                yield delta
        finally:
            await self._rest.aclose()

    async def aclose(self) -> None:
        if self._rest is not None:
            await self._rest.aclose()
