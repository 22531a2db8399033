"""A real HTTP server that speaks the vLLM/OpenAI API, for tests.

``FakeOpenAIServer`` runs a FastAPI app under uvicorn on 127.0.0.1 (a free port) in a
background thread. Unlike a mock it checks what it receives: ``/v1/completions`` demands a
prompt of token IDs, decodes them with a real tokenizer, records the decoded text in
``received`` and, when ``expect_prompt`` is set, answers 400 with a diff if it differs.

Answers are deterministic: the scripted reply of the model (default
``"Reply from <model>."``), encoded with the tokenizer for real usage counts and token IDs.
Failures are scripted per model, consumed in order::

    with FakeOpenAIServer(tokenizer=tok, model_names=["ft", "base"]) as srv:
        srv.script("ft", [500, 429, "timeout", "ok"])
        ...  # point a backend at srv.base_url

Outcomes: an HTTP status (int), ``"timeout"`` (sleeps ``timeout_sleep_s`` before answering,
past any sane client timeout), ``"garbage"`` (200 with a non-JSON body), ``"break"`` (a
streamed answer sends its first piece, then an error event) or ``"ok"``.

With ``"stream": true`` both endpoints answer as vLLM does: server-sent events, one
``data: {json}`` per word of the reply (so a reply of two words or more arrives in two pieces
or more), a finishing event, the usage event when ``stream_options.include_usage`` is set,
then ``data: [DONE]``. ``received`` records ``stream``, ``stream_options``, ``stop``,
``max_tokens`` and ``temperature`` of every call.

Reply texts can be scripted per model too, consumed in order by successful calls (then the
fixed reply again)::

    srv.script_replies("base", ["```python\nprint(1)\n```", "second reply"])

For replica tests: ``failure_rates={"ft": 0.5}`` makes each unscripted generation call of that
model answer 500 with that probability (``seed`` makes the draw repeatable), and ``port``
binds a given port, so that a server stopped with ``__exit__`` can come back at the same
address (a replica that went down and recovered).
"""

from __future__ import annotations

import asyncio
import difflib
import json
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeGuard

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from genesis.tokens import Tokenizer

# Returns None when the decoded prompt is acceptable, else a message saying why not.
PromptCheck = Callable[[str], str | None]
Outcome = int | str
_OUTCOME_WORDS = frozenset({"ok", "timeout", "garbage", "break"})
_PIECE = re.compile(r"\s*\S+\s*|\s+")


class FakeOpenAIServer:
    """Context manager; ``base_url`` is valid between ``__enter__`` and ``__exit__``."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        model_names: Sequence[str] = ("baseline",),
        *,
        replies: Mapping[str, str] | None = None,
        expect_prompt: str | PromptCheck | None = None,
        api_key: str | None = None,
        max_model_len: int = 8192,
        report_vocab_size: bool = False,
        timeout_sleep_s: float = 5.0,
        stream_delay_s: float = 0.0,
        failure_rates: Mapping[str, float] | None = None,
        seed: int | None = None,
        port: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.model_names = list(model_names)
        self.replies = dict(replies or {})
        self.expect_prompt = expect_prompt
        self.api_key = api_key
        self.max_model_len = max_model_len
        self.report_vocab_size = report_vocab_size
        self.timeout_sleep_s = timeout_sleep_s
        # Decoding time per piece (for benchmarks): between streamed pieces, and in total
        # before a whole (not streamed) answer.
        self.stream_delay_s = stream_delay_s
        self.failure_rates = dict(failure_rates or {})
        self._rng = random.Random(seed)
        self._bind_port = port
        self.received: list[dict[str, Any]] = []
        self._scripts: dict[str, deque[Outcome]] = {}
        self._reply_scripts: dict[str, deque[str]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self.app = self._build_app()

    # -- test-facing API ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeOpenAIServer is not running; use it as a context manager")
        return f"http://127.0.0.1:{self._port}"

    def script(self, model: str, outcomes: Iterable[Outcome]) -> None:
        """Queue outcomes for ``model``'s next generation calls (then "ok" forever)."""
        items = list(outcomes)
        bad = [o for o in items if not isinstance(o, int) and o not in _OUTCOME_WORDS]
        if bad:
            raise ValueError(f"unknown outcomes {bad}; use ints or {sorted(_OUTCOME_WORDS)}")
        with self._lock:
            self._scripts.setdefault(model, deque()).extend(items)

    def script_replies(self, model: str, replies: Iterable[str]) -> None:
        """Queue reply texts for ``model``'s next successful generation calls, in order;
        once they are used up the fixed reply (``replies[model]`` or the default) is back."""
        items = list(replies)
        bad = [r for r in items if not isinstance(r, str)]
        if bad:
            raise ValueError(f"scripted replies must be strings, got {bad[:3]}")
        with self._lock:
            self._reply_scripts.setdefault(model, deque()).extend(items)

    def reset(self) -> None:
        """Forget received requests, pending scripts and ``expect_prompt`` (reuse per test)."""
        with self._lock:
            self.received.clear()
            self._scripts.clear()
            self._reply_scripts.clear()
        self.expect_prompt = None

    def calls(self, model: str | None = None, endpoint: str | None = None) -> list[dict[str, Any]]:
        """The recorded requests, optionally only those for ``model`` / ``endpoint``."""
        with self._lock:
            records = list(self.received)
        return [
            r
            for r in records
            if (model is None or r.get("model") == model)
            and (endpoint is None or r["endpoint"] == endpoint)
        ]

    def __enter__(self) -> FakeOpenAIServer:
        # proto IPPROTO_TCP: asyncio then sets TCP_NODELAY on each connection (else every
        # reply waits ~40 ms for the client's delayed ACK).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._bind_port or 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", ws="none", http="auto"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        self._wait_started(sock)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._port = None

    def _wait_started(self, sock: socket.socket) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError("FakeOpenAIServer did not start")
            time.sleep(0.01)

    # -- the app -----------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="genesis fake OpenAI-compatible server")
        app.add_api_route("/health", self._health, methods=["GET"])
        app.add_api_route("/v1/models", self._models, methods=["GET"])
        app.add_api_route("/v1/completions", self._completions, methods=["POST"])
        app.add_api_route("/v1/chat/completions", self._chat, methods=["POST"])
        app.add_api_route("/tokenize", self._tokenize, methods=["POST"])
        app.add_api_route("/detokenize", self._detokenize, methods=["POST"])
        return app

    async def _health(self) -> Response:
        return Response(status_code=200)

    async def _models(self) -> dict[str, Any]:
        data = [
            {
                "id": m,
                "object": "model",
                "owned_by": "genesis-fake",
                "max_model_len": self.max_model_len,
            }
            for m in self.model_names
        ]
        return {"object": "list", "data": data}

    async def _completions(self, request: Request) -> Response:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        prompt = body.get("prompt")
        if not _is_id_list(prompt):
            self._record("completions", body, error="prompt is not a list of token IDs")
            return _error(400, "prompt must be a non-empty list of token IDs (ints >= 0)")
        too_big = [t for t in prompt if t >= self.tokenizer.vocab_size]
        if too_big:
            self._record("completions", body, prompt_ids=list(prompt), error="ID out of range")
            return _error(400, f"token IDs out of vocabulary range: {too_big[:5]}")
        decoded = await self.tokenizer.decode(prompt)
        self._record("completions", body, prompt_ids=list(prompt), prompt=decoded)
        problem = self._check_prompt(decoded)
        if problem is not None:
            return _error(400, problem)
        outcome = await self._outcome(body["model"])
        if isinstance(outcome, Response):
            return outcome
        reply = await self._completion_body(body, len(prompt))
        if body.get("stream") is True:
            return self._stream(body, reply, outcome == "break", chat=False)
        await self._decoding(reply)
        return JSONResponse(reply)

    async def _chat(self, request: Request) -> Response:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        messages = body.get("messages")
        if not _is_messages(messages):
            return _error(400, "messages must be a non-empty list of {role, content} objects")
        self._record("chat", body, messages=messages)
        outcome = await self._outcome(body["model"])
        if isinstance(outcome, Response):
            return outcome
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        prompt_len = len((await self.tokenizer.encode_batch([text]))[0])
        reply = await self._completion_body(body, prompt_len)
        if body.get("stream") is True:
            return self._stream(body, reply, outcome == "break", chat=True)
        await self._decoding(reply)
        choice = reply["choices"][0]
        reply["object"] = "chat.completion"
        reply["choices"] = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": choice["text"]},
                "finish_reason": choice["finish_reason"],
            }
        ]
        return JSONResponse(reply)

    async def _tokenize(self, request: Request) -> Response:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        if not isinstance(body.get("prompt"), str):
            return _error(400, "prompt must be text")
        # The fake never adds special tokens; it records what the client asked for.
        self._record("tokenize", body, add_special_tokens=body.get("add_special_tokens", True))
        ids = (await self.tokenizer.encode_batch([body["prompt"]]))[0].tolist()
        answer: dict[str, Any] = {
            "count": len(ids),
            "max_model_len": self.max_model_len,
            "tokens": ids,
        }
        if self.report_vocab_size:
            answer["vocab_size"] = self.tokenizer.vocab_size
        return JSONResponse(answer)

    async def _detokenize(self, request: Request) -> Response:
        body, refusal = await self._read(request)
        if refusal is not None:
            return refusal
        tokens = body.get("tokens")
        if not _is_id_list(tokens, allow_empty=True):
            return _error(400, "tokens must be a list of token IDs")
        self._record("detokenize", body)
        return JSONResponse({"prompt": await self.tokenizer.decode(tokens)})

    # -- helpers -----------------------------------------------------------------------

    async def _read(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        """The JSON body, or an error response (auth, JSON, unknown model)."""
        if self.api_key is not None:
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                return {}, _error(401, "missing or wrong API key")
        try:
            body = await request.json()
        except ValueError:
            return {}, _error(400, "body is not JSON")
        if not isinstance(body, dict):
            return {}, _error(400, "body must be a JSON object")
        if body.get("model") not in self.model_names:
            return body, _error(404, f"The model `{body.get('model')}` does not exist.")
        return body, None

    async def _decoding(self, reply: dict[str, Any]) -> None:
        """A whole answer takes as long as streaming all of its pieces would."""
        if self.stream_delay_s > 0:
            pieces = len(_PIECE.findall(reply["choices"][0]["text"]))
            await asyncio.sleep(self.stream_delay_s * pieces)

    def _stream(
        self, body: dict[str, Any], reply: dict[str, Any], broken: bool, *, chat: bool
    ) -> StreamingResponse:
        """``reply`` as vLLM streams it: a piece per word, the finish, usage, ``[DONE]``."""
        choice = reply["choices"][0]
        pieces = _PIECE.findall(choice["text"]) or [""]
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True

        def event(text: str | None, finish: str | None) -> bytes:
            if chat:
                delta = {} if text is None else {"content": text}
                item: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                item = {"index": 0, "text": text or "", "finish_reason": finish}
            kind = "chat.completion.chunk" if chat else "text_completion"
            data = {"id": "cmpl-fake", "object": kind, "model": reply["model"], "choices": [item]}
            return f"data: {json.dumps(data)}\n\n".encode()

        async def events() -> AsyncIterator[bytes]:
            for n, piece in enumerate(pieces):
                yield event(piece, None)
                if broken and n == 0:
                    yield b'data: {"error": {"message": "scripted break", "code": 500}}\n\n'
                    return
                await asyncio.sleep(self.stream_delay_s)
            yield event(None if chat else "", choice["finish_reason"])
            if usage:
                data = {"id": "cmpl-fake", "choices": [], "usage": reply["usage"]}
                yield f"data: {json.dumps(data)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    def _record(self, endpoint: str, body: dict[str, Any], **extra: Any) -> None:
        record = {"endpoint": endpoint, "model": body.get("model"), "time": time.monotonic()}
        options = ("stream", "stream_options", "stop", "max_tokens", "temperature")
        record.update({name: body.get(name) for name in options})
        record.update({"prompt_ids": None, "prompt": None, "messages": None})
        record.update(extra)
        with self._lock:
            self.received.append(record)

    def _check_prompt(self, decoded: str) -> str | None:
        expected = self.expect_prompt
        if expected is None:
            return None
        if callable(expected):
            return expected(decoded)
        return None if decoded == expected else prompt_diff(expected, decoded)

    async def _outcome(self, model: str) -> Response | str | None:
        with self._lock:
            queue = self._scripts.get(model)
            if queue:
                outcome: Outcome = queue.popleft()
            else:
                drawn = self._rng.random() < self.failure_rates.get(model, 0.0)
                outcome = 500 if drawn else "ok"
        if isinstance(outcome, int):
            return _error(outcome, f"scripted failure {outcome} for model {model}")
        if outcome == "garbage":
            return PlainTextResponse("<html>not json</html>", status_code=200)
        if outcome == "timeout":
            await self._sleep_unless_closing(self.timeout_sleep_s)
        return "break" if outcome == "break" else None

    def _next_reply(self, model: str) -> str:
        with self._lock:
            queue = self._reply_scripts.get(model)
            if queue:
                return queue.popleft()
        return self.replies.get(model, f"Reply from {model}.")

    async def _sleep_unless_closing(self, seconds: float) -> None:
        # A thread waits on the Event so that leaving the context manager ends the stall.
        await asyncio.to_thread(self._closing.wait, seconds)

    async def _completion_body(self, body: dict[str, Any], prompt_len: int) -> dict[str, Any]:
        model = body["model"]
        reply = self._next_reply(model)
        ids = (await self.tokenizer.encode_batch([reply]))[0].tolist()
        max_tokens = body.get("max_tokens")
        cut = isinstance(max_tokens, int) and len(ids) > max_tokens
        ids = ids[:max_tokens] if cut else ids
        choice: dict[str, Any] = {
            "index": 0,
            "text": await self.tokenizer.decode(ids),
            "finish_reason": "length" if cut else "stop",
        }
        if body.get("return_token_ids"):
            choice["token_ids"] = ids
            choice["prompt_token_ids"] = (
                body.get("prompt") if _is_id_list(body.get("prompt")) else None
            )
        usage = {"prompt_tokens": prompt_len, "completion_tokens": len(ids)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {
            "id": "cmpl-fake",
            "object": "text_completion",
            "model": model,
            "choices": [choice],
            "usage": usage,
        }


def prompt_diff(expected: str, got: str) -> str:
    """A short message locating the first difference, plus a unified diff."""
    first = next((i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), None)
    where = first if first is not None else min(len(expected), len(got))
    diff = "\n".join(
        difflib.unified_diff(
            expected.splitlines(), got.splitlines(), "expected", "received", lineterm="", n=1
        )
    )
    return f"decoded prompt differs from the expected one at char {where}:\n{diff}"


def _is_id_list(value: Any, *, allow_empty: bool = False) -> TypeGuard[list[int]]:
    if not isinstance(value, list) or (not value and not allow_empty):
        return False
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


def _is_messages(value: Any) -> TypeGuard[list[dict[str, str]]]:
    if not isinstance(value, list) or not value:
        return False
    return all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value
    )


def _error(status: int, message: str) -> JSONResponse:
    kind = "BadRequestError" if status < 500 else "InternalServerError"
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": status}}, status_code=status
    )
