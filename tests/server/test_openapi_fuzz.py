"""schemathesis against the live server's /openapi.json: no 5xx, no response off its schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genesis.testing.server_process import api_key_for, config_with_keys, serve

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    demo_home: Path, tmp_path: Path
) -> None:
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is a dev dependency"
    home = tmp_path / "home"
    # A copy: the fuzzer calls the admin routes too (cache clear), which must not touch the
    # home other tests share.
    shutil.copytree(demo_home, home)
    config = config_with_keys(tmp_path / "config", {"ops": ["query", "run", "admin"]})
    with serve(home, global_args=["--config-dir", str(config)]) as server:
        done = subprocess.run(
            [
                st,
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "all",
                # A question's token budget cannot be said in JSON Schema: a schema-valid
                # question may be over it and is refused with 422 by design.
                "--exclude-checks",
                "positive_data_acceptance",
                "--max-examples",
                "8",
                "--seed",
                "20261130",
                "-H",
                f"Authorization: Bearer {api_key_for('ops')}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # schemathesis keeps a cache folder where it runs
        )
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert "Server error" not in report
