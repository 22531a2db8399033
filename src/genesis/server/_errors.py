"""One error format for every 4xx and 5xx: ``{"error": {"type", "message"}}``.

Messages never carry a request body: validation errors name the field and the rule, and any
message is cut to a short prefix, so a 10 MB field cannot come back in a 422.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from genesis.errors import (
    AgentError,
    ConfigError,
    FeatureDisabledError,
    GenesisError,
    LLMError,
    NotWarmedUpError,
    OverloadedError,
    PromptBudgetError,
    RequestTooLargeError,
    UnknownAgentError,
    UnknownCollectionError,
)
from genesis.server._models import ErrorBody

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 300
_MAX_VALIDATION_ITEMS = 5
_HTTP_KINDS = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed"}

# Documented on every route, so clients (and schemathesis) know each status the API may give.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "malformed request body (not UTF-8 or not parseable)"),
        (401, "missing or wrong API key"),
        (403, "the key lacks the scope, or the feature is disabled"),
        (404, "unknown agent, collection, session or route"),
        (413, "request body over server.max_body_bytes"),
        (422, "invalid input (the field and the rule are named)"),
        (429, "rate limit exceeded; see Retry-After"),
        (500, "internal error"),
        (502, "every model failed"),
        (503, "overloaded, not ready or the session store down; see Retry-After"),
    )
}


def short(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis says it was cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_response(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"type": kind, "message": short(message)}}
    return JSONResponse(body, status_code=status, headers=headers)


# The first entry an error is an instance of gives its status (order matters).
_STATUS: tuple[tuple[type[GenesisError], int], ...] = (
    (UnknownAgentError, 404),
    (UnknownCollectionError, 404),
    (RequestTooLargeError, 413),
    (FeatureDisabledError, 403),
    (OverloadedError, 503),
    (NotWarmedUpError, 503),
    (PromptBudgetError, 422),
    (ConfigError, 422),
    (LLMError, 502),
    (AgentError, 500),
)


def status_for(exc: GenesisError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    # An error class may carry its own status (the auth and rate-limit errors do).
    return int(getattr(exc, "status_code", 500))


def _retry_headers(exc: Exception) -> dict[str, str] | None:
    retry = getattr(exc, "retry_after_s", None)
    if retry is None:
        return None
    return {"Retry-After": str(max(1, math.ceil(float(retry))))}


def _validation_message(exc: RequestValidationError) -> str:
    items = []
    for err in exc.errors()[:_MAX_VALIDATION_ITEMS]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        # ``msg`` states the rule; ``input`` (the client's value) is never quoted back.
        items.append(f"{where}: {short(str(err.get('msg', 'invalid')), 120)}")
    more = len(exc.errors()) - len(items)
    if more > 0:
        items.append(f"and {more} more")
    return "invalid request: " + "; ".join(items)


def add_error_handlers(app: FastAPI) -> None:
    async def on_genesis_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GenesisError)
        status = status_for(exc)
        if status >= 500:
            logger.warning("%s %s failed: %s", request.method, request.url.path, short(str(exc)))
        extra = dict(getattr(exc, "headers", None) or {})
        extra.update(_retry_headers(exc) or {})
        return error_response(status, type(exc).__name__, str(exc), extra or None)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, "ValidationError", _validation_message(exc))

    async def on_value_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(422, "ValueError", str(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = _HTTP_KINDS.get(exc.status_code, "HTTPError")
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, kind, str(exc.detail), headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s: unexpected error", request.method, request.url.path)
        return error_response(500, "InternalError", "internal error (logged on the server)")

    app.add_exception_handler(GenesisError, on_genesis_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(ValueError, on_value_error)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
