"""Per-request overhead of one RAG request: Genesis vs a LangChain LCEL chain vs LlamaIndex.

    python benchmarks/peers.py --json out.json [--shared PATH] [--rounds 6] [--block 30]

The frameworks are not taken from Genesis's environment (where they are dev extras, for the
OpenAI-compatibility tests): on its first run the script makes a virtual environment of its own
(``--venv``, default ``.peers-venv`` in the repository), installs their pinned releases
(``PEERS``) there from PyPI, with every package they need (none is taken from the running
environment), makes Genesis and its dependencies visible to it from the running interpreter's
environment, and runs itself again in it (``--no-venv`` runs in the current environment, with
whatever releases it holds). ``versions`` in the JSON says what ran.

The same request in three systems, against the same fake OpenAI-compatible server (a separate
process on loopback that checks the request shape and answers at once):

- **Genesis**: ``TokenCachedRAG.answer`` over a ``KnowledgeBase`` (its default embedded vector
  store, dense retrieval), the token cache (in-process L1, warmed), the prompt assembler and the
  model registry with the vLLM completions backend (prompt sent as token IDs);
- **LangChain**: ``{"context": retriever | format_docs, "question": passthrough} | prompt |
  ChatOpenAI | StrOutputParser`` over ``InMemoryVectorStore``;
- **LlamaIndex**: ``VectorStoreIndex(...).as_query_engine(similarity_top_k=5)`` (default
  in-memory ``SimpleVectorStore``, default compact synthesis) with ``OpenAILike``.

All three hold the same chunk texts (Genesis's chunks of the FastAPI tutorial in
``../shared/corpora/docs/fastapi``, read there) with the same precomputed all-MiniLM-L6-v2
vectors, and embed queries by looking up the same precomputed vectors, so each retrieves the
same top 5 (checked for every query: ``same_top5``). The 60 labelled FastAPI queries are asked.

Overhead = a system's latency percentile minus the median latency of a bare ``httpx`` call
to the same server with the same prompt text, measured in the same run. Systems run in blocks
of ``--block`` requests, in a shuffled order each round, so machine drift hits all of them.
``cpu_ms`` is the client process's CPU time per request (all threads) beyond the bare call's,
a figure other jobs on the machine disturb far less than latency. ``c32`` runs 32 requests at
a time. ``c1_no_retrieval`` swaps each system's retriever for a
lookup of the precomputed top 5 (Genesis: a retriever object; LangChain: a lambda runnable;
LlamaIndex: a ``BaseRetriever``), leaving prompt building, the LLM client and parsing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from genesis.cache import TokenCache
from genesis.knowledge import KnowledgeBase, MiniLMEmbedder, ScoredChunk
from genesis.knowledge._base import embedding_text
from genesis.knowledge._embedded import EmbeddedVectorStore
from genesis.knowledge._types import Chunk
from genesis.llm import CompletionsBackend, ModelRegistry, ModelRoute
from genesis.rag import PromptAssembler, TokenCachedRAG
from genesis.tokens import HFTokenizer
from genesis.tokens._segments import SegmentEncoder

# The frameworks' releases, installed in the script's own virtual environment (`_peers_venv`).
PEERS = (
    "langchain-openai==1.7.4",
    "langchain-core==1.8.3",
    "llama-index-core==0.14.25",
    "llama-index-llms-openai-like==0.8.1",
)
# Set in the environment of the run inside that virtual environment (no second re-run).
VENV_ENV = "GENESIS_PEERS_VENV"
MODEL = "baseline"
REPLY = "FastAPI does that with a path operation decorator [1]."
SYSTEMS = ("genesis", "langchain", "llamaindex")
Call = Callable[[str], Awaitable[Any]]


# -- the fake server (its own process) -----------------------------------------------------


def _serve(port: int) -> None:
    import uvicorn

    completion = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "text": REPLY, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 12, "total_tokens": 13},
    }
    chat = {
        **completion,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY},
                "finish_reason": "stop",
            }
        ],
    }
    answers = {
        "/v1/completions": json.dumps(completion).encode(),
        "/v1/chat/completions": json.dumps(chat).encode(),
    }

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, payload = _check(scope["path"], body, answers)
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    # A long keep-alive: uvicorn's 5 s default closes idle connections between blocks, and a
    # client that reuses one in that instant gets a ReadError (no system retries here).
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan="off",
        timeout_keep_alive=300,
    )


def _check(path: str, body: bytes, answers: dict[str, bytes]) -> tuple[int, bytes]:
    """The fake checks what it receives: the model, and a prompt of token IDs or messages."""
    try:
        request = json.loads(body)
    except ValueError:
        return 400, b'{"error":{"message":"body is not JSON"}}'
    if path not in answers or request.get("model") != MODEL:
        return 404, b'{"error":{"message":"unknown path or model"}}'
    if path == "/v1/completions":
        prompt = request.get("prompt")
        ok = isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt)
    else:
        messages = request.get("messages")
        ok = isinstance(messages, list) and all(isinstance(m.get("content"), str) for m in messages)
    if not ok:
        return 400, b'{"error":{"message":"bad prompt"}}'
    return 200, answers[path]


def _start_server() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("fake server did not start")


# -- shared data ---------------------------------------------------------------------------


class PrecomputedEmbedder:
    """Genesis's Embedder protocol over vectors computed once with the real MiniLM."""

    def __init__(self, inner: MiniLMEmbedder) -> None:
        self._inner = inner
        self.table: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        return self._inner.dim

    @property
    def fingerprint(self) -> str:
        return self._inner.fingerprint

    def warm_up(self) -> None:
        self._inner.warm_up()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.table]
        if missing:
            self.table.update(zip(missing, self._inner.embed_documents(missing), strict=True))
        return np.stack([self.table[t] for t in texts]) if texts else np.zeros((0, self.dim))

    def embed_query(self, text: str) -> np.ndarray:
        return self.table[text]


async def _genesis(args: argparse.Namespace, url: str, work: Path) -> dict[str, Any]:
    minilm = MiniLMEmbedder()
    embedder = PrecomputedEmbedder(minilm)
    counter = HFTokenizer.from_file(minilm.tokenizer_path, name="all-minilm-l6-v2")
    kb = KnowledgeBase(
        work / "kb",
        embedder,  # type: ignore[arg-type]
        EmbeddedVectorStore(work / "kb" / "vectors"),
        count_tokens=counter.count,
    )
    await kb.ingest(args.shared / "corpora/docs/fastapi/tutorial", "fastapi")
    queries = _queries(args.shared)
    embedder.table.update(zip(queries, minilm.embed_documents(queries), strict=True))
    encoder = SegmentEncoder(HFTokenizer.from_file(args.shared / "tokenizers/mistral-7b-v0.1"))
    cache = TokenCache(encoder, None)
    assembler = PromptAssembler(encoder)
    await assembler.warm_up()
    registry = ModelRegistry({"docs": ModelRoute(None, MODEL)}, CompletionsBackend(url))
    rag = TokenCachedRAG(
        kb, cache, assembler, registry.generator("docs"), default_model=MODEL, retrieval="dense"
    )
    return {"kb": kb, "rag": rag, "registry": registry, "embedder": embedder, "queries": queries}


def _queries(shared: Path) -> list[str]:
    lines = (shared / "corpora/docs/fastapi/queries.jsonl").read_text("utf-8").splitlines()
    return [json.loads(line)["query"] for line in lines if line.strip()]


class _FixedRetriever:
    """Genesis's retriever protocol answering from the precomputed top 5."""

    def __init__(self, hits: dict[str, list[ScoredChunk]]) -> None:
        self._hits = hits

    async def embed_query_async(self, text: str) -> Any:
        return None

    async def search_vector(
        self, vector: Any, query: str, collection: str, top_k: int, mode: str
    ) -> list[ScoredChunk]:
        return self._hits[query]


# -- the frameworks --------------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages below. "
    "Cite the passages you use as [n]. If the context does not contain the answer, say so."
)


def _langchain(url: str, chunks: list[Chunk], table: dict[str, np.ndarray]) -> dict[str, Any]:
    try:
        from langchain_core.documents import Document
        from langchain_core.embeddings import Embeddings
        from langchain_core.output_parsers import StrOutputParser
        from langchain_core.prompts import ChatPromptTemplate
        from langchain_core.runnables import RunnableLambda, RunnablePassthrough
        from langchain_core.vectorstores import InMemoryVectorStore
        from langchain_openai import ChatOpenAI
    except ImportError as exc:
        raise SystemExit(f"{exc}: run without --no-venv, or pip install {PEERS[0]}") from exc

    class Lookup(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [table[t].tolist() for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return table[text].tolist()

    store = InMemoryVectorStore(Lookup())
    docs = [Document(embedding_text(c), metadata={"id": c.id, "source": c.source}) for c in chunks]
    store.add_documents(docs, ids=[c.id for c in chunks])
    retriever = store.as_retriever(search_kwargs={"k": 5})
    prompt = ChatPromptTemplate.from_messages(
        [("system", SYSTEM_PROMPT), ("human", "Context:\n{context}\n\nQuestion: {question}")]
    )
    model = ChatOpenAI(model=MODEL, base_url=f"{url}/v1", api_key="sk-bench", max_retries=0)

    def fmt(docs: list[Any]) -> str:
        return "\n\n".join(f"[{i}] {d.page_content}" for i, d in enumerate(docs, 1))

    chain = (
        {"context": retriever | fmt, "question": RunnablePassthrough()}
        | prompt
        | model
        | StrOutputParser()
    )
    return {
        "chain": chain,
        "retriever": retriever,
        "fixed": lambda hits: (
            {"context": RunnableLambda(lambda q: hits[q]) | fmt, "question": RunnablePassthrough()}
            | prompt
            | model
            | StrOutputParser()
        ),
    }


def _llamaindex(
    url: str, chunks: list[Chunk], table: dict[str, np.ndarray], tokenizer_file: Path
) -> dict[str, Any]:
    try:
        from llama_index.core import Settings, VectorStoreIndex
        from llama_index.core.base.embeddings.base import BaseEmbedding
        from llama_index.core.query_engine import RetrieverQueryEngine
        from llama_index.core.retrievers import BaseRetriever
        from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
        from llama_index.llms.openai_like import OpenAILike
    except ImportError as exc:
        raise SystemExit(
            f"{exc}: run without --no-venv, or pip install {' '.join(PEERS[2:])}"
        ) from exc
    from tokenizers import Tokenizer

    # LlamaIndex counts tokens with tiktoken by default, which downloads its tables; give it
    # a local tokenizer instead (offline machine).
    hf = Tokenizer.from_file(str(tokenizer_file / "tokenizer.json"))
    Settings.tokenizer = lambda text: hf.encode(text, add_special_tokens=False).ids

    class Lookup(BaseEmbedding):
        def _get_query_embedding(self, query: str) -> list[float]:
            return table[query].tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return table[query].tolist()

        def _get_text_embedding(self, text: str) -> list[float]:
            return table[text].tolist()

    nodes = [
        TextNode(text=embedding_text(c), id_=c.id, embedding=table[embedding_text(c)].tolist())
        for c in chunks
    ]
    llm = OpenAILike(
        model=MODEL,
        api_base=f"{url}/v1",
        api_key="sk-bench",
        is_chat_model=True,
        context_window=8192,
        max_retries=0,
    )
    index = VectorStoreIndex(nodes, embed_model=Lookup())
    engine = index.as_query_engine(similarity_top_k=5, llm=llm)

    class Fixed(BaseRetriever):
        def __init__(self, hits: dict[str, list[Any]]) -> None:
            super().__init__()
            self._hits = hits

        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            return self._hits[query_bundle.query_str]

    def fixed(hits: dict[str, list[Any]]) -> Any:
        return RetrieverQueryEngine.from_args(Fixed(hits), llm=llm)

    return {"engine": engine, "retriever": index.as_retriever(similarity_top_k=5), "fixed": fixed}


# -- measuring -----------------------------------------------------------------------------


async def _blocks(
    calls: dict[str, Call], queries: list[str], *, rounds: int, block: int, concurrency: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Latencies (ms) per system, run in shuffled blocks of ``block`` requests, and the
    client process's CPU time per request (ms, all threads)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, float] = dict.fromkeys(calls, 0.0)
    rng = random.Random(5)
    cursor = 0
    for _ in range(rounds):
        order = list(calls)
        rng.shuffle(order)
        for name in order:
            batch = [queries[(cursor + i) % len(queries)] for i in range(block)]
            start = time.process_time()
            times[name] += await _run_block(calls[name], batch, concurrency)
            cpu[name] += time.process_time() - start
        cursor += block
    return times, {name: 1000 * cpu[name] / len(times[name]) for name in calls}


async def _run_block(call: Call, batch: list[str], concurrency: int) -> list[float]:
    out: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(q: str) -> None:
        async with gate:
            start = time.perf_counter()
            await call(q)
            out.append((time.perf_counter() - start) * 1000)

    await asyncio.gather(*(one(q) for q in batch))
    return out


def _overheads(times: dict[str, list[float]], cpu: dict[str, float]) -> dict[str, dict[str, float]]:
    """Latency percentiles minus the bare call's median; ``cpu_ms`` is the client CPU time
    per request beyond the bare call's (less sensitive to other jobs on the machine)."""
    bare = statistics.median(times["bare"])
    out = {"bare_call": {"p50_ms": round(bare, 3), "cpu_ms": round(cpu["bare"], 3)}}
    for name in SYSTEMS:
        q = np.percentile(times[name], [50, 95, 99])
        out[name] = {
            f"p{p}_ms": round(float(v) - bare, 3) for p, v in zip((50, 95, 99), q, strict=True)
        }
        out[name]["cpu_ms"] = round(cpu[name] - cpu["bare"], 3)
    return out


def _ratios(result: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """Better framework's overhead over Genesis's; None where Genesis's measured overhead is
    not positive (noise larger than the overhead: no meaningful ratio)."""
    keys = ("p50_ms", "p99_ms", "cpu_ms")
    best = {k: min(result["langchain"][k], result["llamaindex"][k]) for k in keys}
    return {
        f"better_framework_over_genesis_{k[:-3]}": (
            round(best[k] / result["genesis"][k], 2) if result["genesis"][k] > 0 else None
        )
        for k in keys
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    proc, url = _start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return await _measure(args, url, Path(tmp))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _measure(args: argparse.Namespace, url: str, work: Path) -> dict[str, Any]:
    g = await _genesis(args, url, work)
    kb: KnowledgeBase = g["kb"]
    chunks = await kb.all_chunks("fastapi")
    table: dict[str, np.ndarray] = g["embedder"].table
    queries: list[str] = g["queries"]
    lc = _langchain(url, chunks, table)
    li = _llamaindex(url, chunks, table, args.shared / "tokenizers/mistral-7b-v0.1")
    top = {q: await kb.search_vector(table[q], q, "fastapi", 5, "dense") for q in queries}
    same = await _same_top5(queries, top, lc, li)
    print(f"{len(chunks)} chunks, {len(queries)} queries, same top 5: {same}", flush=True)
    rag: TokenCachedRAG = g["rag"]
    for q in queries:  # steady state: every chunk's token IDs in the cache
        await rag.answer(q, "fastapi")
    fixed_rag = TokenCachedRAG(
        _FixedRetriever(top), rag._cache, rag.assembler, rag.generator, default_model=MODEL
    )
    lc_docs = {q: await lc["retriever"].ainvoke(q) for q in queries}
    li_nodes = {q: await li["retriever"].aretrieve(q) for q in queries}
    prompts = {q: _bare_text(top[q], q) for q in queries}
    client = httpx.AsyncClient()

    async def bare(q: str) -> None:
        payload = {"model": MODEL, "messages": [{"role": "user", "content": prompts[q]}]}
        r = await client.post(f"{url}/v1/chat/completions", json=payload)
        r.raise_for_status()
        r.json()

    full: dict[str, Call] = {
        "bare": bare,
        "genesis": lambda q: rag.answer(q, "fastapi"),
        "langchain": lc["chain"].ainvoke,
        "llamaindex": li["engine"].aquery,
    }
    lc_fixed, li_fixed = lc["fixed"](lc_docs), li["fixed"](li_nodes)
    no_retrieval: dict[str, Call] = {
        "bare": bare,
        "genesis": lambda q: fixed_rag.answer(q, "fastapi"),
        "langchain": lc_fixed.ainvoke,
        "llamaindex": li_fixed.aquery,
    }
    for call in (*full.values(), *no_retrieval.values()):  # warm every path
        for q in queries[:5]:
            await call(q)
    out: dict[str, Any] = {}
    plan = [("c1", full, 1), ("c32", full, 32), ("c1_no_retrieval", no_retrieval, 1)]
    for name, calls, c in plan:
        block = args.block if c == 1 else max(args.block, 64)
        times, cpu = await _blocks(calls, queries, rounds=args.rounds, block=block, concurrency=c)
        out[name] = _overheads(times, cpu)
        print(f"{name}: {json.dumps(out[name])}", flush=True)
    await client.aclose()
    await g["registry"].aclose()
    out["ratios"] = {name: _ratios(out[name]) for name, _, _ in plan}
    out["versions"] = _versions()
    out["same_top5"] = same
    out["settings"] = {
        "chunks": len(chunks),
        "queries": len(queries),
        "rounds": args.rounds,
        "block": args.block,
        "requests_per_system": {
            name: args.rounds * (args.block if c == 1 else max(args.block, 64))
            for name, _, c in plan
        },
    }
    return out


def _bare_text(hits: list[ScoredChunk], query: str) -> str:
    context = "\n\n".join(f"[{i}] {embedding_text(h.chunk)}" for i, h in enumerate(hits, 1))
    return f"{SYSTEM_PROMPT}\n\nContext:\n{context}\n\nQuestion: {query}"


async def _same_top5(
    queries: list[str], top: dict[str, list[ScoredChunk]], lc: dict[str, Any], li: dict[str, Any]
) -> bool:
    same = True
    for q in queries:
        genesis = [h.chunk.id for h in top[q]]
        langchain = [d.metadata["id"] for d in await lc["retriever"].ainvoke(q)]
        llamaindex = [n.node.node_id for n in await li["retriever"].aretrieve(q)]
        if not (set(genesis) == set(langchain) == set(llamaindex)):
            print(f"top 5 differ for {q[:60]!r}", flush=True)
            same = False
    return same


def _versions() -> dict[str, str]:
    names = [
        "langchain-core",
        "langchain-openai",
        "llama-index-core",
        "llama-index-llms-openai-like",
        "openai",
        "httpx",
    ]
    out = {"python": platform.python_version(), "environment": sys.prefix}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    try:
        out["genesis"] = metadata.version("genesis")
    except metadata.PackageNotFoundError:
        out["genesis"] = "source tree"
    return out


def _peers_venv(venv: Path) -> Path:
    """The python of ``venv``, made (once) for the frameworks: ``PEERS`` and everything they
    need installed there from PyPI, and the running interpreter's site-packages (Genesis and
    its dependencies) added after its own, so that a package both have is the framework's."""
    python = venv / "bin" / "python"
    stamp = venv / "genesis-peers.txt"
    wanted = "\n".join(PEERS) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"making {venv} for {', '.join(PEERS)} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    own = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    host = sysconfig.get_paths()["purelib"]
    Path(own, "genesis-host.pth").write_text(f"import site; site.addsitedir({host!r})\n")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--ignore-installed", *PEERS], check=True)
    stamp.write_text(wanted)
    return python


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--shared", type=Path, default=here.parent / "shared")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=int, default=30)
    parser.add_argument("--venv", type=Path, default=here / ".peers-venv")
    parser.add_argument("--no-venv", action="store_true", help="run in this environment")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve)
        return
    if args.json is None:
        parser.error("--json is required")
    if not args.no_venv and not os.environ.get(VENV_ENV):
        venv = args.venv.resolve()
        python = _peers_venv(venv)
        env = {**os.environ, VENV_ENV: str(venv)}
        os.execve(python, [str(python), str(Path(__file__).resolve()), *sys.argv[1:]], env)
    out = asyncio.run(_run(args))
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
