"""The app in a real Chromium (Playwright): train live, stop, explore an image, see it on the map.

Needs Debian's chromium at /usr/bin/chromium (`apt-get install -y chromium`); CI installs it, so a
missing browser is a failure, not a skip. Screenshots go to tests/artifacts/.
"""
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from app_fixtures import app_server, trained_checkpoint  # noqa: E402,F401

CHROMIUM = os.environ.get("VICREG_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")

LOSS_POINTS = """() => { const el = document.querySelector('#loss-plot .js-plotly-plot');
                         return el && el.data && el.data.length ? el.data[0].x.length : 0; }"""
MAP_TRACES = """() => { const el = document.querySelector('#umap-plot .js-plotly-plot');
                        return el && el.data ? el.data.map(t => t.name) : []; }"""


@pytest.fixture(scope="module")
def page(app_server):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium` "
                    "(or point VICREG_CHROMIUM at a chromium binary); the browser test needs a real browser")
    from playwright.sync_api import sync_playwright

    os.makedirs(ART, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(60_000)
        pg.goto(app_server.url)
        pg.wait_for_selector("#loss-plot")
        yield pg
        browser.close()


def wait_for(page, js: str, check, timeout: float = 120.0, what: str = ""):
    t0, last = time.time(), None
    while time.time() - t0 < timeout:
        last = page.evaluate(js)
        if check(last):
            return last
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}; last value {last!r}")


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input")
    box.fill(str(value))
    box.press("Tab")


def test_train_live_then_stop(page, app_server):
    page.get_by_role("tab", name="Train").click()
    page.get_by_label("Quick CPU demo").check()
    # the quick preset, made smaller still so a few steps come quickly on a busy CI CPU
    set_number(page, "train-batch", 16)
    set_number(page, "train-subset", 480)
    page.get_by_text("Advanced").click()
    set_number(page, "train-threads", 1)  # robust on a CPU shared with other jobs
    page.locator("#train-start").click()
    page.wait_for_selector("#train-message:has-text('started')")
    first = wait_for(page, LOSS_POINTS, lambda n: n >= 2, what="the first loss points")
    later = wait_for(page, LOSS_POINTS, lambda n: n >= first + 2, what="the loss chart to gain points")
    assert later > first
    progress = page.locator("#train-progress").inner_text()
    assert "running" in progress and "pairs/s" in progress and "ETA" in progress and "step" in progress
    page.screenshot(path=os.path.join(ART, "browser_train_running.png"), full_page=True)
    # a reloaded page shows the run still in progress
    page.reload()
    page.wait_for_selector("#train-progress:has-text('running')", timeout=30_000)
    wait_for(page, LOSS_POINTS, lambda n: n >= later, what="the charts after a reload")
    page.locator("#train-stop").click()
    page.wait_for_selector("#train-progress:has-text('stopped')", timeout=90_000)
    assert "checkpoint" in page.locator("#train-progress").inner_text()
    page.screenshot(path=os.path.join(ART, "browser_train_stopped.png"), full_page=True)


def test_explore_upload_and_map(page, app_server, cifar_root):
    # choose the tiny trained checkpoint (the stopped run above also made one) and compute its map first
    page.get_by_role("tab", name="UMAP").click()
    page.locator("#checkpoint input").click()
    page.get_by_role("option", name="tiny · epoch 1/1").click()
    page.locator("#umap-run").click()
    names = wait_for(page, MAP_TRACES, lambda t: len(t) >= 10, timeout=180, what="the UMAP scatter")
    assert "airplane" in names and "truck" in names
    # upload a real CIFAR-10 test image
    page.get_by_role("tab", name="Explore").click()
    cls = sorted(os.listdir(os.path.join(cifar_root, "test")))[3]
    f = os.path.join(cifar_root, "test", cls, sorted(os.listdir(os.path.join(cifar_root, "test", cls)))[5])
    page.locator("#explore-upload input[type=file]").set_input_files(f)
    page.wait_for_selector("#explore-status:has-text('Map position')", timeout=120_000)
    assert page.locator("#explore-view1 img").count() == 1 and page.locator("#explore-view2 img").count() == 1
    assert "crop at" in page.locator("#explore-params1").inner_text()
    assert page.locator("#explore-neighbours img").count() == 8
    assert page.locator("#explore-map img").count() == 1 and page.locator("#explore-embedding img").count() == 1
    captions = page.locator("#explore-neighbours").inner_text()
    assert "·" in captions
    page.screenshot(path=os.path.join(ART, "browser_explore.png"), full_page=True)
    # the same image as a star on the interactive map
    page.get_by_role("tab", name="UMAP").click()
    page.locator("#umap-run").click()
    wait_for(page, MAP_TRACES, lambda t: "your image" in t, timeout=60, what="the explored image's marker on the map")
    page.screenshot(path=os.path.join(ART, "browser_umap.png"), full_page=True)
