"""Upstream error bodies never reach a client, and reach the log only redacted.

The upstream here is a real HTTP server on loopback that answers with the status a test asks
for and a body that reflects the request's headers, the way a misconfigured proxy or a debug
error page does: the API key the backend sent comes straight back in the error body.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from genesis._redact import redact, redact_excerpt
from genesis.errors import (
    AllModelsFailedError,
    LLMBadRequestError,
    LLMError,
    LLMRateLimitError,
    LLMServerError,
    LLMTimeoutError,
)
from genesis.llm import (
    ChatBackend,
    CompletionsBackend,
    GenerationRequest,
    Message,
    ModelRegistry,
    ModelRoute,
)

# Shaped like nothing the patterns know (no sk- prefix): only the header context or the
# backend's knowledge of its own key can catch it.
API_KEY = "correct-horse-battery-staple-4242"
OPENAI_STYLE_KEY = "sk-proj-Zx8Qw3Er5Ty7Ui9Op1As"


class _EchoHandler(BaseHTTPRequestHandler):
    """``POST /s<status>/v1/...`` answers ``<status>`` with the request headers in the body,
    once as JSON and once as raw header lines."""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        status = int(self.path.split("/")[1].removeprefix("s"))
        headers = {k.lower(): v for k, v in self.headers.items()}
        raw = "".join(f"{k}: {v}\n" for k, v in self.headers.items())
        body = json.dumps({"error": "debug dump", "headers": headers, "raw": raw}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _chat_request(model: str = "m") -> GenerationRequest:
    return GenerationRequest(
        model=model, query="hello", messages=[Message("user", "hello")], timeout_s=5.0
    )


def _assert_never_leaked(secret: str, exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    assert secret not in str(exc)
    assert all(secret not in str(arg) for arg in exc.args)
    assert secret not in caplog.text
    assert all(secret not in record.getMessage() for record in caplog.records)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, LLMServerError),
        (503, LLMServerError),
        (400, LLMBadRequestError),
        (401, LLMBadRequestError),
        (429, LLMRateLimitError),
        (408, LLMTimeoutError),
    ],
)
async def test_an_echoed_key_reaches_neither_the_error_nor_the_log(
    echo_url: str, status: int, error: type[LLMError], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with ChatBackend(f"{echo_url}/s{status}", api_key=API_KEY) as backend:
        with pytest.raises(error) as info:
            await backend.generate(_chat_request())
    _assert_never_leaked(API_KEY, info.value, caplog)
    assert f"upstream returned {status}" in str(info.value)
    assert "debug dump" not in str(info.value)  # no byte of the body goes to the client
    # ...but the operator sees what the upstream said, redacted.
    assert "debug dump" in caplog.text
    assert "***" in caplog.text


@pytest.mark.integration
async def test_an_sk_key_is_redacted_by_pattern_and_by_knowledge(
    echo_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with CompletionsBackend(f"{echo_url}/s500", api_key=OPENAI_STYLE_KEY) as backend:
        ids = np.asarray([1, 2, 3], dtype=np.uint32)
        request = GenerationRequest(
            model="m", query="q", messages=[], prompt_ids=ids, timeout_s=5.0
        )
        with pytest.raises(LLMServerError) as info:
            await backend.generate(request)
    _assert_never_leaked(OPENAI_STYLE_KEY, info.value, caplog)
    assert "Zx8Qw3Er5Ty7" not in caplog.text  # not even a fragment


@pytest.mark.integration
async def test_all_models_failed_names_statuses_not_bodies(
    echo_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend = ChatBackend(f"{echo_url}/s500", api_key=API_KEY)
    registry = ModelRegistry(
        {"support": ModelRoute("ft", "base")},
        backend,
        max_retries=0,
        total_budget_s=10.0,
        attempt_timeout_s=5.0,
    )
    try:
        with pytest.raises(AllModelsFailedError) as info:
            await registry.chat_async("support", [Message("user", "hello")])
    finally:
        await registry.aclose()
    _assert_never_leaked(API_KEY, info.value, caplog)
    assert all(API_KEY not in reason for reason in info.value.reasons.values())
    assert "upstream returned 500" in str(info.value)
    assert set(info.value.reasons) == {"ft", "base"}


@pytest.mark.integration
async def test_a_transport_error_does_not_show_the_url_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://user:hunter2-url-password@127.0.0.1:{_closed_port()}"
    async with ChatBackend(url, api_key=API_KEY) as backend:
        with pytest.raises(LLMServerError, match="transport error") as info:
            await backend.generate(_chat_request())
    _assert_never_leaked("hunter2-url-password", info.value, caplog)
    _assert_never_leaked(API_KEY, info.value, caplog)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the redactor ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc.DEF-123_xyz", "abc.DEF-123_xyz"),
        ('{"authorization": "Bearer tok_9f8e7d6c5b"}', "tok_9f8e7d6c5b"),
        ("{'Authorization': 'Basic dXNlcjpwYXNz'}", "dXNlcjpwYXNz"),
        ("proxy-authorization: Digest nonce-abcdef", "nonce-abcdef"),
        ("x-api-key: plainvalue1234", "plainvalue1234"),
        ("sent bearer eyJabc.def.ghi12345 upstream", "eyJabc.def.ghi12345"),
        ("key sk-abcdefghijklmnop1234 was refused", "abcdefghijklmnop1234"),
        ("key sk-proj-AbCdEfGh_12345678 was refused", "AbCdEfGh_12345678"),
        ("genesis key gk_Q2xhdWRlIGtleSBzYW1wbGU was refused", "Q2xhdWRlIGtleSBzYW1wbGU"),
        ("redis://:s3cr3t-pass@redis.internal:6379/0", "s3cr3t-pass"),
        ("redis://:p@ss@word@redis.internal:6379/0", "ss@word"),
        ("postgresql://app:hunter22@db:5432/genesis", "hunter22"),
        ("GET /v1/x?api_key=AKIA1234567&limit=3", "AKIA1234567"),
        ("login?user=bob&password=tr0ub4dor", "tr0ub4dor"),
        ('{"password": "tr0ub4dor&3", "user": "bob"}', "tr0ub4dor&3"),
        ('{"api_key": "k-1234567890"}', "k-1234567890"),
        ("client_secret=shhh-1234", "shhh-1234"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlX2hlcmU",
            "eyJzdWIiOiIxMjM0In0",
        ),
    ],
)
def test_redact_removes_credentials(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "***" in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "upstream returned 500",
        "model 'open-mistral-7b' is overloaded, retry later",
        "prompt_tokens: 1200, completion_tokens: 30",
        "http://vllm.internal:8001/v1/completions",
        "the task was skipped",
        "token IDs out of vocabulary range: [50257]",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_removes_a_known_secret_without_any_label() -> None:
    text = f"invalid credential {API_KEY} for tenant 7"
    assert API_KEY in redact(text)  # no pattern can know it is a key...
    assert redact(text, known=[API_KEY]) == "invalid credential *** for tenant 7"
    assert redact("a short one: abc", known=["abc"]) == "a short one: abc"


def test_redact_excerpt_is_one_bounded_line() -> None:
    text = "line one\nAuthorization: Bearer abcdefgh12345\r\n" + "x " * 1000
    out = redact_excerpt(text, limit=80)
    assert "\n" not in out and "\r" not in out
    assert "abcdefgh12345" not in out
    assert out.startswith("line one\\nAuthorization: ***")
    assert out.endswith(f"... ({len(text)} chars)")
    assert len(out) < 80 + 30
    assert redact_excerpt("") == "<empty>"
    assert redact_excerpt("short") == "short"


def test_redact_excerpt_never_keeps_a_fragment_of_a_key_cut_in_two() -> None:
    # A huge body is cut before redaction; the key straddling the cut must go whole, not
    # survive as a fragment too short for the sk- pattern.
    limit = 50
    head = "a " * 200  # 400 chars: the pre-cut lands at 8 * 50 = 400, inside the key
    key = "sk-" + "Q" * 40
    out = redact_excerpt(head + key + " tail " * 1000, limit=limit)
    assert "QQQ" not in out
    assert redact_excerpt(head[:-4] + key, limit=1000).count("Q") == 0
