"""The report page in a real browser: headless Chromium from Debian's ``chromium`` package
driven by Selenium (``/usr/bin/chromium`` and ``/usr/bin/chromedriver``, nothing
downloaded), opening the HTML file of tests/report_demo.py's ledger with the network off.
Every plot is drawn (an SVG with a size on the page, its bar labels the numbers in its
``data-values``), the cost table shows each unit's sum in its own column, and the page
fetched nothing.

``STOPLINE_REPORT_SCREENSHOT=PATH`` saves the whole page there (docs/report.png; or run
``python tests/report_demo.py docs/report.png``). ``STOPLINE_REQUIRE_BROWSER=1`` (set by
.ci/run) fails instead of skipping without Chromium."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1400",
         "--force-device-scale-factor=1")


@contextmanager
def chromium():
    from selenium import webdriver

    profile = tempfile.mkdtemp(prefix="stopline-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(120)  # (a hang guard: a loaded machine's Chromium can take its time)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                                    "downloadThroughput": 0, "uploadThroughput": 0})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(page: Path, out: Path) -> None:
    """The whole page as a PNG (the window as tall as the page)."""
    with chromium() as d:
        d.get(page.resolve().as_uri())
        h = d.execute_script("return document.documentElement.scrollHeight")
        d.set_window_size(1280, min(int(h) + 140, 8000))
        d.save_screenshot(str(out))
    from PIL import Image  # matplotlib's dependency: a 64-colour palette keeps the PNG small

    Image.open(out).convert("RGB").quantize(colors=64).save(out, optimize=True)


@pytest.fixture
def page(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        if os.environ.get("STOPLINE_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium is required here: apt-get install -y chromium chromium-driver")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    pytest.importorskip("selenium")
    pytest.importorskip("matplotlib")
    from report_demo import build, render

    url, pricing = build(tmp_path)
    return render(url, pricing, tmp_path / "report.html")


def test_every_plot_and_the_cost_table_render_offline_with_the_numbers_of_the_ledger(page):
    from selenium.webdriver.common.by import By

    from policy_engine.report.html import PLOTS

    with chromium() as d:
        d.get(page.resolve().as_uri())
        assert d.title == "Stopline rollback report"
        for pid in PLOTS:
            fig = d.find_element(By.ID, f"plot-{pid}")
            svg = fig.find_element(By.TAG_NAME, "svg")
            assert fig.is_displayed() and svg.size["width"] > 300 and svg.size["height"] > 100, pid
            values = json.loads(fig.get_attribute("data-values"))
            shown = {t.text for t in svg.find_elements(By.TAG_NAME, "text")}
            assert values and all(f"{v:g}" in shown for v in values.values()), (pid, values)
        # the cost: each unit in its own column, the incident's sums as the demo prices them
        rows = [[c.text for c in r.find_elements(By.TAG_NAME, "td")]
                for r in d.find_elements(By.XPATH, "//h3[.='By scenario']/following-sibling::table[1]//tr")]
        heads = [c.text for c in d.find_elements(By.XPATH, "//h3[.='By scenario']/following-sibling::table[1]//th")]
        assert heads == ["scenario", "EUR", "USD", "hours"]
        incident = next(r for r in rows if r and r[0] == "incident")
        # 6 chains of run-3: 6 x (120 + 25) USD, 6 x 18 EUR, 6 x 0.25 h
        assert incident == ["incident", "108.00", "870.00", "1.50"]
        # nothing was fetched: the only resource is the page itself
        assert d.execute_script("return performance.getEntriesByType('resource').length") == 0
        shot = os.environ.get("STOPLINE_REPORT_SCREENSHOT")
    if shot:
        screenshot(page, Path(shot))
