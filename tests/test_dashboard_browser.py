"""The dashboard in a real browser: headless `streamlit run`, Debian's Chromium via Playwright, screenshots."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port, needs_chromium

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def dashboard():
    port = free_port()
    env = {**os.environ, "TUMORLIB_RESULTS": str(ROOT / "results")}
    cmd = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not start within 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_overview_renders_with_real_numbers(dashboard, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from tumorlib.dashboard import default_run, discover_runs
    from tumorlib.results import headline, load_metrics

    runs = discover_runs(ROOT / "results") + discover_runs(ROOT / "models", bundled=True)
    assert runs, "results/ holds no run"
    opening = default_run(runs, ROOT / "models")
    assert opening is not None
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(dashboard)
        metric = page.get_by_test_id("stMetric").first
        expect(metric).to_be_visible(timeout=90_000)
        # Streamlit draws the cards one by one: read them once the row has stopped growing.
        shown: list[str] = []
        for _ in range(60):
            page.wait_for_timeout(1000)
            now = page.get_by_test_id("stMetricValue").all_inner_texts()
            if len(now) > 1 and now == shown:
                break
            shown = now
        # The dashboard opens on the shipped default model's results.
        expected = [card["value"] for card in headline(load_metrics(opening.path / "metrics.json"))]
        assert shown[: len(expected)] == expected[: len(shown)], shown
        assert page.get_by_text("Traceback").count() == 0
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 20_000
        if os.environ.get("UPDATE_SCREENSHOT"):
            shutil.copy(shot, ROOT / "docs" / "dashboard.png")
        browser.close()
