"""The inference server's own tokenizer (vLLM ``/tokenize`` and ``/detokenize``) as a Tokenizer.

API checked against vLLM's protocol models (repo vllm-project/vllm,
``vllm/entrypoints/serve/tokenize/protocol.py`` and ``api_router.py``):
``POST /tokenize`` takes ``{"model", "prompt", "add_special_tokens"}`` (the last defaults to
true, so we always send false) and answers ``{"count", "max_model_len", "tokens"}``;
``POST /detokenize`` takes ``{"model", "tokens"}`` and answers ``{"prompt"}``. Both live at
the server root, not under ``/v1``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
from pydantic import SecretStr

from genesis._http import auth_headers, new_client, normalize_base_url, post_json
from genesis.errors import LLMError, TokenizerError
from genesis.tokens._protocol import TokenIds, as_token_ids

logger = logging.getLogger(__name__)

# Mixed scripts, digits, punctuation and leading spaces: two tokenizers that agree on this
# text almost surely share vocabulary and pre-tokenizer. Changing it changes fingerprints.
PROBE_TEXT = (
    " Genesis probe: naïve café, 12345 tokens — x² ≠ y³; 東京, Ελλάδα!\n\tdef f(): return 0"
)


class RemoteTokenizer:
    """A :class:`~genesis.tokens.Tokenizer` backed by the inference server.

    Call :meth:`warm_up` once before use: it fetches ``max_model_len`` and the probe IDs that
    make up the fingerprint. ``vocab_size`` comes from the server when it reports one,
    otherwise from the ``vocab_size`` argument (vLLM's ``/tokenize`` does not report it).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        client: httpx.AsyncClient | None = None,
        api_key: SecretStr | str | None = None,
        vocab_size: int | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not model:
            raise TokenizerError("RemoteTokenizer needs the served model's name")
        self._base_url = normalize_base_url(base_url)
        self._model = model
        self._headers = auth_headers(api_key)
        self._owns_client = client is None
        self._client = client if client is not None else new_client()
        self._configured_vocab = vocab_size
        self._timeout = timeout_s
        self._fingerprint: str | None = None
        self._vocab_size: int | None = None
        self.max_model_len: int | None = None

    def __repr__(self) -> str:
        return f"RemoteTokenizer(base_url={self._base_url!r}, model={self._model!r})"

    @property
    def name(self) -> str:
        return f"remote:{self._model}"

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            raise TokenizerError(f"{self.name}: call warm_up() before reading the fingerprint")
        return self._fingerprint

    @property
    def vocab_size(self) -> int:
        if self._vocab_size is None:
            raise TokenizerError(f"{self.name}: call warm_up() before reading vocab_size")
        return self._vocab_size

    async def warm_up(self) -> None:
        """Fetch ``max_model_len``, the vocabulary size and the probe IDs (the fingerprint)."""
        body = await self._tokenize(PROBE_TEXT)
        self.max_model_len = _optional_int(body, "max_model_len")
        self._vocab_size = _optional_int(body, "vocab_size") or self._configured_vocab
        if self._vocab_size is None:
            raise TokenizerError(
                f"{self.name}: the server does not report vocab_size; pass vocab_size= "
                "(from the model's config) to RemoteTokenizer"
            )
        probe = _ids(body, self.name)
        self._check_range(probe)
        self._fingerprint = remote_fingerprint(self._model, self.max_model_len, probe)
        logger.info("remote tokenizer %s ready (fingerprint %s)", self.name, self._fingerprint)

    async def encode_batch(self, texts: Sequence[str]) -> list[TokenIds]:
        """One ``/tokenize`` call per text, all in flight together; no special tokens."""
        bodies = await asyncio.gather(*(self._tokenize(t) for t in texts))
        out = [_ids(body, self.name) for body in bodies]
        for ids in out:
            self._check_range(ids)
        return out

    async def decode(self, ids: Sequence[int] | TokenIds) -> str:
        payload = {"model": self._model, "tokens": as_token_ids(ids).tolist()}
        body = await self._post("/detokenize", payload)
        text = body.get("prompt")
        if not isinstance(text, str):
            raise TokenizerError(f"{self.name}: /detokenize answered without a 'prompt' text")
        return text

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _tokenize(self, text: str) -> dict[str, Any]:
        payload = {"model": self._model, "prompt": text, "add_special_tokens": False}
        return await self._post("/tokenize", payload)

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            return await post_json(
                self._client,
                f"{self._base_url}{path}",
                payload,
                timeout_s=self._timeout,
                headers=self._headers,
                what=f"POST {path} (model {self._model!r})",
            )
        except LLMError as exc:
            raise TokenizerError(f"{self.name}: {exc}") from exc

    def _check_range(self, ids: TokenIds) -> None:
        limit = self._vocab_size
        if limit is not None and ids.size and int(ids.max()) >= limit:
            raise TokenizerError(
                f"{self.name}: server returned token ID {int(ids.max())} >= vocab_size {limit}"
            )


def remote_fingerprint(model: str, max_model_len: int | None, probe_ids: TokenIds) -> str:
    """Short hash of (model name, max_model_len, the probe text's IDs)."""
    material = json.dumps([model, max_model_len, probe_ids.tolist()], separators=(",", ":"))
    return "rt" + hashlib.sha256(material.encode("utf-8")).hexdigest()[:14]


def _ids(body: dict[str, Any], name: str) -> TokenIds:
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) and t >= 0 for t in tokens):
        raise TokenizerError(f"{name}: /tokenize answered without a list of token IDs")
    return np.asarray(tokens, dtype=np.uint32)


def _optional_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    return int(value) if isinstance(value, int) and value > 0 else None
