"""`cologen app` in a real headless browser (issue: interactive Gradio app): Chromium driven by selenium.

Open the page, switch to the Edit tab, upload an image through the page's file input, type an instruction, click
run and wait until the output image and its routing table appear; the page is then saved as a screenshot,
``outputs/test-artifacts/app_edit.png`` (for a person to look at; ``outputs/`` is not tracked). Skipped only when
Chromium or its driver is not installed (``.ci/run`` installs both: Debian's ``chromium`` and ``chromium-driver``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.test_app import start_app, write_weights

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "outputs" / "test-artifacts" / "app_edit.png"
TIMEOUT_S = 120  # page load, upload and a 28-step tiny sample on a loaded 2-core machine take ~10 s

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]


def _browser():
    """A headless Chromium (selenium, Debian's chromedriver), or a skip naming what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip(f"chromium ({chromium or 'missing'}) and chromedriver ({driver_path or 'missing'}) are needed: "
                    "apt-get install chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1800", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def _shapes_png(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """A red circle and a blue square on white, Shapes-5 style (what "make the circle green" is about)."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    draw.ellipse((6, 10, 30, 34), fill=(220, 30, 30))
    draw.rectangle((38, 14, 56, 32), fill=(30, 60, 220))
    im.save(path)
    return path


def test_edit_in_the_browser_shows_the_output_image(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    base, adapters = write_weights(tmp_path)
    demo, url, runner = start_app(base, adapters)
    image = _shapes_png(tmp_path / "shapes.png")
    start = time.perf_counter()
    try:
        wait = WebDriverWait(browser, TIMEOUT_S)
        browser.get(url)
        tab = wait.until(EC.element_to_be_clickable((By.XPATH, "//button[@role='tab'][normalize-space()='Edit']")))
        tab.click()
        wait.until(EC.visibility_of_element_located((By.ID, "edit-text")))
        browser.find_element(By.CSS_SELECTOR, "#edit-image input[type=file]").send_keys(str(image))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#edit-image img")))  # the upload is shown
        browser.find_element(By.CSS_SELECTOR, "#edit-text textarea").send_keys("make the circle green")
        browser.find_element(By.ID, "edit-run").click()
        output = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#edit-output img")))
        wait.until(lambda b: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                                    output))
        wait.until(EC.text_to_be_present_in_element((By.ID, "edit-routing"), "single_transformer_blocks.1"))
        natural = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", output)
        height, width = runner.output_size((64, 48))
        assert natural == [width, height]  # the output image itself: 32 x 24 px at the tiny resolution
        routing = browser.find_element(By.ID, "edit-routing").text
        assert all(name in routing for name in runner.block_names)
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'})",
                               browser.find_element(By.ID, "tab-edit"))
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOT))
    finally:
        browser.quit()
        demo.close()
    print(f"browser edit round trip: {time.perf_counter() - start:.1f} s; screenshot {SCREENSHOT}")
    assert SCREENSHOT.is_file() and SCREENSHOT.stat().st_size > 10_000
