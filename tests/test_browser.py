"""The app in a real browser: Debian's Chromium driven by Playwright uploads an example and reads the label."""

from __future__ import annotations

import os
import shutil

import pytest

import app
from tumorlib import DEFAULT_MODEL_DIR

from .conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port, needs_chromium

EXAMPLE = ROOT / "examples" / "meningioma_figshare_450.jpg"

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def server():
    demo = app.build_demo(model_dirs=[DEFAULT_MODEL_DIR], preload=True)
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_upload_click_read_label_and_screenshot(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(server)
        page.locator("input[type=file]").first.set_input_files(str(EXAMPLE))
        page.get_by_role("button", name="Classify", exact=True).click()
        label = page.get_by_test_id("label-output-value").first
        expect(label).to_have_text("meningioma", timeout=60_000)
        page.wait_for_timeout(500)  # let the overlay and text settle before the picture
        shot = tmp_path / "screenshot.png"
        page.screenshot(path=str(shot), full_page=False)
        assert shot.stat().st_size > 20_000
        if os.environ.get("UPDATE_SCREENSHOT"):
            shutil.copy(shot, ROOT / "docs" / "screenshot.png")
        browser.close()
