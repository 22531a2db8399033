"""Server-sent events in the shape OpenAI's chat completions stream uses.

Checked against the ``openai`` SDK's parser (``openai/_streaming.py``): each event is a
``data: <json>`` line and a blank line; ``data: [DONE]`` ends the stream; an event whose JSON
has an ``error`` key makes the SDK raise ``APIError`` with ``error.message``. So an error
after the first byte (the status is 200 by then) is sent as ``data: {"error": {...}}`` in
Genesis' one error format, never as a cut connection.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

MEDIA_TYPE = "text/event-stream"
# No caching, no proxy buffering: every chunk must reach the client when it is sent.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


def event(data: dict[str, Any]) -> bytes:
    return (
        b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    )


def error_event(kind: str, message: str) -> bytes:
    return event({"error": {"type": kind, "message": message}})


@dataclass(slots=True)
class ChunkWriter:
    """The ``chat.completion.chunk`` events of one completion (one id, one timestamp).

    With ``include_usage`` every chunk carries ``"usage": null`` and :meth:`usage` writes the
    last one, with empty ``choices``, as OpenAI does for ``stream_options.include_usage``.
    """

    model: str
    include_usage: bool = False
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return event(self._chunk([choice], None))

    def usage(self, usage: dict[str, Any], genesis: dict[str, Any] | None = None) -> bytes:
        """The usage chunk; ``genesis`` (the request id and cost) rides along as the same
        extension field a non-streamed completion has."""
        chunk = self._chunk([], usage)
        if genesis is not None:
            chunk["genesis"] = genesis
        return event(chunk)

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = usage
        return chunk
