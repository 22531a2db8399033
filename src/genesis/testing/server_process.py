"""`genesis serve` as a user starts it: a real subprocess on a loopback port (for tests and
benchmarks)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True, slots=True)
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def rss_bytes(self) -> int:
        """Resident memory of the server process (from /proc, Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def genesis_cmd() -> list[str]:
    exe = shutil.which("genesis", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "genesis"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(
    home: Path,
    *settings: str,
    env: dict[str, str] | None = None,
    global_args: Sequence[str] = (),
    serve_args: Sequence[str] = (),
    ready_timeout_s: float = 180.0,
) -> Iterator[ServerProcess]:
    """Start ``genesis --home HOME [GLOBAL_ARGS] --set S... serve --port P [SERVE_ARGS]`` and
    wait until ``/health/ready`` answers 200."""
    port = free_port()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS")}
    base_env.update(env or {})
    log = home.parent / f"serve-{port}.log"
    sets = [arg for s in settings for arg in ("--set", s)]
    cmd = [
        *genesis_cmd(),
        "--home",
        str(home),
        *global_args,
        *sets,
        "serve",
        "--port",
        str(port),
        *serve_args,
    ]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, env=base_env, start_new_session=True
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", proc, log)
    try:
        _wait_ready(server, ready_timeout_s)
        yield server
    finally:
        _stop(proc)


def _wait_ready(server: ServerProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"genesis serve exited early:\n{server.log_text()[-3000:]}")
        try:
            if httpx.get(server.url + "/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"genesis serve not ready in {timeout_s} s:\n{server.log_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def config_with_keys(folder: Path, keys: dict[str, Sequence[str]], **server: object) -> Path:
    """A config folder whose ``dev.yaml`` holds API keys (id -> scopes; the key is
    ``test-key-<id>-0123456789abcdef``) and ``server`` settings; for ``--config-dir``."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    entries = [{"id": i, "key": api_key_for(i), "scopes": list(s)} for i, s in keys.items()]
    data: dict[str, object] = {"auth": {"keys": entries}}
    if server:
        data["server"] = dict(server)
    (folder / "dev.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    return folder


def api_key_for(key_id: str) -> str:
    return f"test-key-{key_id}-0123456789abcdef"
