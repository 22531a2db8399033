"""`genesis serve --workers N`: settings reach the workers, the home and metrics are shared."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from genesis.errors import ConfigError
from genesis.observability import LoopLagMonitor
from genesis.server import ServeOptions, create_worker_app, with_loop_monitor
from genesis.server._workers import OPTIONS_ENV

PORT = 18207  # this helper's range is 18200-18230


def test_serve_options_travel_as_json() -> None:
    options = ServeOptions(
        "staging", "/etc/genesis", {"home": "/srv/g", "redis.url": "redis://x"}, workers=3
    )
    assert ServeOptions.from_json(options.to_json()) == options
    # options written before the worker count travelled mean one worker
    assert ServeOptions.from_json('{"env": "dev"}').workers == 1


@pytest.mark.parametrize(
    ("workers", "cores", "threads"), [(1, 2, 2), (2, 2, 1), (2, 8, 4), (3, 8, 2), (4, 2, 1)]
)
def test_each_worker_gets_its_share_of_the_cores(workers: int, cores: int, threads: int) -> None:
    from genesis.server._workers import executor_threads

    assert executor_threads(workers, cores) == threads


def test_a_worker_of_several_installs_an_executor_of_its_share() -> None:
    from genesis._executor import current_executor, install_executor
    from genesis.server._workers import build_app, executor_threads

    before, interval = install_executor(None), sys.getswitchinterval()
    try:
        build_app(ServeOptions(overrides={"server.loop_rt_priority": "0"}, workers=64))
        # fewer threads than this machine's cores (a lone process would take them all)
        assert current_executor().workers == executor_threads(64)
    finally:
        current_executor().shutdown(wait=False)
        install_executor(before)
        sys.setswitchinterval(interval)
        request_slice_default()


def test_bad_serve_options_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=OPTIONS_ENV):
        ServeOptions.from_json("[1, 2")


def test_a_worker_without_options_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OPTIONS_ENV, raising=False)
    with pytest.raises(ConfigError, match="start workers with `genesis serve`"):
        create_worker_app()


def test_the_loop_monitor_runs_for_the_app_lifetime() -> None:
    seen: list[bool] = []
    monitor = LoopLagMonitor()
    app = FastAPI()

    @app.get("/")
    async def index() -> dict[str, bool]:
        seen.append(monitor.running)
        return {"ok": True}

    with TestClient(with_loop_monitor(app, monitor)) as client:
        assert client.get("/").json() == {"ok": True}
    assert seen == [True]
    assert not monitor.running


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def two_workers(demo_home: Path, tmp_path: Path) -> Iterator[str]:
    if not _free(PORT):
        pytest.fail(f"port {PORT} is taken")
    args = [sys.executable, "-m", "genesis", "--home", str(demo_home), "serve",
            "--port", str(PORT), "--workers", "2"]  # fmt: skip
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{PORT}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/health/ready", timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("serve --workers 2 did not become ready:\n" + _tail(tmp_path))
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _tail(folder: Path) -> str:
    return (folder / "serve.log").read_text(errors="replace")[-3000:]


def _requests_total(metrics: str) -> float:
    pattern = r'^genesis_requests_total\{[^}]*outcome="ok"[^}]*\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, metrics, flags=re.MULTILINE))


@pytest.mark.slow
@pytest.mark.integration
def _pids(metrics: str) -> set[str]:
    return set(re.findall(r'^genesis_process_up\{pid="(\d+)"\}', metrics, re.M))


def test_two_workers_answer_and_report_metrics_summed_over_both(two_workers: str) -> None:
    questions = [f"How do I rotate an API key for team {i}?" for i in range(12)]
    close = {"Connection": "close"}  # a new connection each time: either worker may take it
    with httpx.Client(base_url=two_workers, timeout=120) as client:
        # Ready means one worker is: wait (bounded) until both have come up before counting.
        deadline = time.monotonic() + 180
        while len(_pids(client.get("/metrics", headers=close).text)) < 2:
            assert time.monotonic() < deadline, "the second worker never came up"
            time.sleep(0.5)
        for question in questions:
            body = {"question": question, "agent": "support"}
            response = client.post("/v1/ask", json=body, headers=close)
            assert response.status_code == 200, response.text
        scrapes = [client.get("/metrics", headers=close).text for _ in range(6)]
    # Every scrape, whichever worker answered it, shows both processes and every request.
    for text in scrapes:
        assert len(_pids(text)) == 2
        assert _requests_total(text) == len(questions)
        assert "genesis_event_loop_lag_seconds_bucket" in text


def test_served_connections_get_tcp_nodelay_whatever_the_listening_socket() -> None:
    """uvicorn's --workers socket has proto 0, where asyncio leaves Nagle on (a response's
    body then waited ~40 ms for the client's delayed ACK)."""
    import socket

    from genesis.server._workers import NoDelayH11Protocol, set_nodelay

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # proto 0, as uvicorn binds
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    with listener, socket.create_connection(listener.getsockname()):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
            set_nodelay(accepted)
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert "set_nodelay" in NoDelayH11Protocol.connection_made.__code__.co_names


def test_http_protocol_defaults_to_httptools_with_nodelay_and_names_a_bad_choice() -> None:
    from genesis.server._workers import NoDelayH11Protocol, NoDelayHttpToolsProtocol, http_protocol

    assert http_protocol("auto") is NoDelayHttpToolsProtocol  # httptools is a dependency
    assert http_protocol("httptools") is NoDelayHttpToolsProtocol
    assert http_protocol("h11") is NoDelayH11Protocol
    assert "set_nodelay" in NoDelayHttpToolsProtocol.connection_made.__code__.co_names
    with pytest.raises(ConfigError, match="server.http"):
        http_protocol("spdy")


def request_slice_default() -> None:
    from genesis._sched import request_slice

    request_slice(0)  # build_app gave this (pytest's) thread the loop's short slice


def test_a_served_app_sets_the_gil_switch_interval_from_the_settings() -> None:
    from genesis.server._workers import build_app

    before = sys.getswitchinterval()
    try:
        # pytest's own thread: no real-time priority for it (tests/test_sched.py checks that)
        overrides = {"server.gil_switch_interval_ms": "2.5", "server.loop_rt_priority": "0"}
        build_app(ServeOptions(overrides=overrides))
        assert sys.getswitchinterval() == pytest.approx(0.0025)
    finally:
        sys.setswitchinterval(before)
        request_slice_default()
