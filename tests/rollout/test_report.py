"""`genesis report`: the HTML page renders its charts in headless Chromium (offline), and
the Markdown says the same verdict."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from genesis.config import load_settings
from genesis.rollout import Rollout, SqlRolloutStore
from genesis.rollout._report import render_html, render_markdown, report_data
from genesis.store import open_database
from genesis.testing.rollout_sim import MemoryEventStore, Truth, simulate_events

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    home = tmp_path_factory.mktemp("report")
    clock = [1_800_000_000.0]
    settings = load_settings(
        "dev", environ={}, overrides={"home": str(home), "rollout.gates.min_stage_minutes": 0}
    )
    events = MemoryEventStore()
    store = SqlRolloutStore(open_database(settings), clock=lambda: clock[0])
    rollout = Rollout(settings.rollout, settings.agents, store, events, clock=lambda: clock[0])
    rollout.start("support", "test", "report test")
    rollout.advance("support", "test")
    state = rollout.advance("support", "test")  # 50%
    events.write(
        simulate_events(
            rollout._assigner,
            agent="support",
            experiment=state.experiment,
            percent=50,
            requests=4_000,
            start_ts=clock[0] + 5,
            finetuned=Truth(success=0.80),
            baseline=Truth(success=0.86),
            seed=5,
        )
    )
    clock[0] += 4_000
    rollout.tick()  # rolls back: the change and its evidence appear in the report
    return report_data(rollout, "support")


def test_markdown_has_verdict_srm_and_history(data: dict[str, object]) -> None:
    md = render_markdown(data)
    assert "| verdict | **" in md
    assert "sample-ratio check" in md and "mismatch: False" in md
    assert "| start |" in md and "| rollback |" in md
    assert "success rate significantly lower" in md


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if IN_CI:
            pytest.fail("chromium not installed (required under CI=true)", pytrace=False)
        pytest.skip("chromium not installed")
    return found


def _headless(chromium: str, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000"]
    return subprocess.run(
        [chromium, *flags, *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.integration
@pytest.mark.slow
def test_html_report_renders_charts_offline_in_chromium(
    data: dict[str, object], tmp_path: Path
) -> None:
    chromium = _chromium()
    page = tmp_path / "report.html"
    page.write_text(render_html(data), encoding="utf-8")
    html = page.read_text(encoding="utf-8")
    assert "<script src=" not in html  # self-contained: plotly.js is inline
    dom = _headless(chromium, "--dump-dom", page.as_uri()).stdout
    # Plotly drew its SVG: one main-svg per chart, and a path per line and band.
    assert dom.count('class="main-svg"') >= 4
    assert dom.count('class="js-line"') + dom.count("class='js-line'") >= 8
    assert dom.count('class="js-fill"') >= 4
    shot = tmp_path / "shot.png"
    _headless(chromium, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri())
    pixels = _png_pixels(shot.read_bytes())
    # Not blank: many colours, and the variants' line colours are on the page.
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50
    assert _has_colour(pixels, (214, 39, 40)) and _has_colour(pixels, (31, 119, 180))


def _has_colour(pixels: np.ndarray, rgb: tuple[int, int, int]) -> bool:
    close = np.abs(pixels[..., :3].astype(int) - np.array(rgb)).sum(axis=-1) < 30
    return int(close.sum()) > 100


def _png_pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))
