"""Bounds enforced before a request reaches a route: body size and requests in flight.

Both are plain ASGI middleware rather than ``BaseHTTPMiddleware``: they run on every request,
and a pure ASGI wrapper adds a function call, not a task and a stream per request.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genesis.server._auth import access_log_fields

access_logger = logging.getLogger("genesis.access")


def error_message(
    status: int, kind: str, message: str, headers: Iterable[tuple[str, str]] = ()
) -> tuple[Message, Message]:
    """The ``http.response.start`` and body messages of one JSON error in Genesis' format."""
    body = json.dumps({"error": {"type": kind, "message": message}}).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers),
    ]
    start: Message = {"type": "http.response.start", "status": status, "headers": raw}
    return start, {"type": "http.response.body", "body": body}


async def _send_error(
    send: Send, status: int, kind: str, message: str, headers: Iterable[tuple[str, str]] = ()
) -> None:
    start, body = error_message(status, kind, message, headers)
    await send(start)
    await send(body)


class BodyLimitMiddleware:
    """413 for a body over ``max_bytes``, decided before any of it is parsed.

    A declared ``Content-Length`` over the bound is refused without reading a byte; any other
    body is read here first, counted as it arrives, and refused as soon as it passes the
    bound, so at most ``max_bytes`` plus one chunk is ever held. Reading it here rather than
    counting inside the app's own reads matters: FastAPI turns any exception raised while it
    reads a body into a 400. The body is never echoed.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        body = await self._read(receive)
        if body is None:
            await self._refuse(send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # disconnects and the like
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes ``max_bytes`` (the rest is not read)."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(parts)
            part = message.get("body", b"")
            size += len(part)
            if size > self.max_bytes:
                return None
            parts.append(part)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def _refuse(self, send: Send) -> None:
        await _send_error(
            send,
            413,
            "RequestTooLargeError",
            f"request body is larger than the limit of {self.max_bytes} bytes "
            "(server.max_body_bytes)",
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class InFlightLimitMiddleware:
    """At most ``max_in_flight`` requests under ``prefixes`` at once in this process; past
    that a 503 with ``Retry-After`` at once, never an unbounded queue.

    Health and metrics are outside ``prefixes`` so that probes still answer under load.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_in_flight: int,
        *,
        retry_after_s: float = 1.0,
        prefixes: tuple[str, ...] = ("/v1/", "/admin/"),
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.prefixes = prefixes
        self.in_flight = 0
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            self.refused += 1
            await _send_error(
                send,
                503,
                "OverloadedError",
                f"server busy: {self.max_in_flight} requests in flight "
                "(server.max_in_flight); retry later",
                [("retry-after", str(max(1, math.ceil(self.retry_after_s))))],
            )
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class AccessLogMiddleware:
    """One log line per request: method, path, status, key id (never the key), time.

    It replaces uvicorn's access log, which cannot know which key a request came with.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, seen)
        finally:
            fields = access_log_fields(Request(scope))
            access_logger.info(
                "%s %s %s key=%s client=%s %.1fms",
                scope["method"],
                scope["path"],
                status,
                fields["key_id"],
                fields["client"],
                (time.perf_counter() - began) * 1000,
                extra=fields,
            )


class KeepAliveRecycleMiddleware:
    """Ends a keep-alive connection after ``max_requests`` requests (``connection: close`` on
    the last response, which uvicorn honours), as nginx's ``keepalive_requests`` does.

    Why: under ``serve --workers N`` every worker accepts from one listening socket, and a
    client's keep-alive connection stays with the worker that accepted it, for good: in
    ``benchmarks/service_load.py``'s one-client phase one worker did all the work (README).
    A recycled connection reconnects, and the accept goes
    to whichever worker's loop is free first: the less busy one. Connections are told apart
    by the client's address and port (``scope["client"]``); at most ``max_tracked`` are
    counted (past that the counts start again, which only delays a recycle).
    """

    def __init__(self, app: ASGIApp, max_requests: int = 100, max_tracked: int = 65_536) -> None:
        if max_requests < 1:
            raise ValueError(f"max_requests must be >= 1, got {max_requests}")
        self.app = app
        self.max_requests = max_requests
        self.max_tracked = max_tracked
        self._served: dict[tuple[str, int], int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] != "http" or not client:
            await self.app(scope, receive, send)
            return
        key = (client[0], client[1])
        served = self._served.pop(key, 0) + 1
        if served < self.max_requests:
            if len(self._served) >= self.max_tracked:
                self._served.clear()
            self._served[key] = served
            await self.app(scope, receive, send)
            return

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)
