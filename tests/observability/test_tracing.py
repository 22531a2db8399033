"""OpenTelemetry traces: nothing imported while off; a span per stage to a real OTLP/HTTP
receiver when ``observability.otlp_endpoint`` is set."""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from genesis.observability._tracing import traces_url
from genesis.testing.server_process import serve

_OFF = """
import sys
import threading
from genesis.config import load_settings
from genesis.app import Genesis
from genesis.server import create_app
from genesis.observability import record_trace
create_app(Genesis(load_settings(environ={})))
record_trace("r", 0, 1, {"embed": 1.0}, agent="a", model="m", outcome="ok")
ours = ("opentelemetry.sdk.trace", "opentelemetry.exporter")
print(sorted(m for m in sys.modules if m.startswith(ours)), threading.active_count())
"""


def test_with_tracing_off_the_opentelemetry_sdk_is_never_imported() -> None:
    # (redis-py imports the OpenTelemetry API and metrics SDK by itself when installed; the
    # tracing SDK and the exporter, with their batch thread, are ours to load or not.)
    done = subprocess.run(
        [sys.executable, "-c", _OFF], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[] 1"  # and no exporter thread


def test_the_traces_url_of_a_collector() -> None:
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/v1/traces/") == "http://c:4318/v1/traces"


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        if self.path == "/v1/traces":
            self.bodies.append(data)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []
    handler = type("Receiver", (_Receiver,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.integration
def test_a_request_is_exported_as_a_span_with_a_child_per_stage(
    demo_home: Path, otlp_receiver: tuple[str, list[bytes]]
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    endpoint, bodies = otlp_receiver
    with serve(demo_home, f"observability.otlp_endpoint={endpoint}") as server:
        question = {"question": "How do I rotate an API key?", "agent": "support"}
        response = httpx.post(server.url + "/v1/ask", json=question, timeout=60)
        assert response.status_code == 200, response.text
        # The answer's stages: its waterfall, less what runs after the answer is ready.
        after = {"session_write", "serialize", "other", "total"}
        stages = [s for s in response.json()["waterfall"] if s not in after]
        assert {"auth", "route", "embed", "generate"} <= set(stages)
    # The server flushed its queued spans on a clean stop.
    spans = []
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                spans.extend(scope.spans)
    [root] = [s for s in spans if s.name == "genesis.request"]
    attributes = {a.key: a.value.string_value for a in root.attributes}
    assert attributes["genesis.agent"] == "support"
    assert attributes["genesis.outcome"] == "ok"
    children = [s for s in spans if s.parent_span_id == root.span_id]
    assert [c.name for c in sorted(children, key=lambda c: c.start_time_unix_nano)] == stages
    assert all(c.trace_id == root.trace_id for c in children)
    assert max(c.end_time_unix_nano for c in children) <= root.end_time_unix_nano
