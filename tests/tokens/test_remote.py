"""RemoteTokenizer against the fake server's /tokenize and /detokenize."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from genesis.errors import TokenizerError
from genesis.testing.fake_openai import FakeOpenAIServer
from genesis.tokens import HFTokenizer, Tokenizer
from genesis.tokens._remote import RemoteTokenizer

TEXTS = ["Hello world.", " leading space and tabs\t", "naïve café 東京", "", "def f(): return 1"]


@pytest.fixture(scope="module")
def gpt2(tokenizers_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_file(tokenizers_dir / "gpt2")


@pytest.fixture(scope="module")
def running_server(gpt2: HFTokenizer) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(gpt2, ["gpt2", "other"], max_model_len=1024) as srv:
        yield srv


@pytest.fixture
def server(running_server: FakeOpenAIServer) -> FakeOpenAIServer:
    running_server.reset()
    running_server.report_vocab_size = False
    return running_server


@pytest.mark.integration
async def test_encode_batch_matches_the_local_tokenizer(
    server: FakeOpenAIServer, gpt2: HFTokenizer
) -> None:
    remote = RemoteTokenizer(server.base_url, "gpt2", vocab_size=gpt2.vocab_size)
    await remote.warm_up()
    got = await remote.encode_batch(TEXTS)
    want = gpt2.encode_batch_sync(TEXTS)
    assert [g.tolist() for g in got] == [w.tolist() for w in want]
    assert all(g.dtype == np.uint32 for g in got)
    calls = server.calls("gpt2", "tokenize")
    assert len(calls) == 1 + len(TEXTS)  # the warm-up probe, then one per text
    assert all(c["add_special_tokens"] is False for c in calls)
    await remote.aclose()


@pytest.mark.integration
async def test_decode_round_trips(server: FakeOpenAIServer, gpt2: HFTokenizer) -> None:
    remote = RemoteTokenizer(server.base_url + "/v1", "gpt2", vocab_size=gpt2.vocab_size)
    await remote.warm_up()
    [ids] = await remote.encode_batch(["A round trip, exactly."])
    assert await remote.decode(ids) == "A round trip, exactly."
    await remote.aclose()


@pytest.mark.integration
async def test_fingerprint_is_stable_and_depends_on_the_model(
    server: FakeOpenAIServer, gpt2: HFTokenizer
) -> None:
    prints = []
    for model in ("gpt2", "gpt2", "other"):
        remote = RemoteTokenizer(server.base_url, model, vocab_size=gpt2.vocab_size)
        await remote.warm_up()
        prints.append(remote.fingerprint)
        assert remote.max_model_len == 1024 and isinstance(remote, Tokenizer)
        await remote.aclose()
    assert prints[0] == prints[1] != prints[2]
    assert prints[0].startswith("rt") and len(prints[0]) == 16


@pytest.mark.integration
async def test_vocab_size_comes_from_the_server_when_it_reports_one(
    server: FakeOpenAIServer, gpt2: HFTokenizer
) -> None:
    server.report_vocab_size = True
    remote = RemoteTokenizer(server.base_url, "gpt2", vocab_size=10**6)
    await remote.warm_up()
    assert remote.vocab_size == gpt2.vocab_size
    await remote.aclose()


@pytest.mark.integration
async def test_without_any_vocab_size_warm_up_says_what_to_pass(server: FakeOpenAIServer) -> None:
    remote = RemoteTokenizer(server.base_url, "gpt2")
    with pytest.raises(TokenizerError, match="vocab_size="):
        await remote.warm_up()
    await remote.aclose()


@pytest.mark.integration
async def test_ids_beyond_the_configured_vocab_are_refused(server: FakeOpenAIServer) -> None:
    remote = RemoteTokenizer(server.base_url, "gpt2", vocab_size=100)
    with pytest.raises(TokenizerError, match="vocab_size 100"):
        await remote.warm_up()
    await remote.aclose()


@pytest.mark.integration
async def test_unknown_model_is_a_tokenizer_error(server: FakeOpenAIServer) -> None:
    remote = RemoteTokenizer(server.base_url, "nope", vocab_size=50257)
    with pytest.raises(TokenizerError, match="404"):
        await remote.warm_up()
    await remote.aclose()


async def test_unreachable_server_is_a_tokenizer_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    remote = RemoteTokenizer(f"http://127.0.0.1:{port}", "gpt2", vocab_size=50257)
    with pytest.raises(TokenizerError, match="transport error"):
        await remote.encode_batch(["x"])
    await remote.aclose()


def test_fingerprint_before_warm_up_is_a_clear_error() -> None:
    remote = RemoteTokenizer("http://127.0.0.1:1", "gpt2", vocab_size=50257)
    with pytest.raises(TokenizerError, match="warm_up"):
        _ = remote.fingerprint
    with pytest.raises(TokenizerError, match="warm_up"):
        _ = remote.vocab_size
