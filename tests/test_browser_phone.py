"""The page on a phone (390×844 in a real Chromium), and a visitor's run across a reload, on a public demo: a Space
(SPACE_ID set) with no admin secret, so the public rules apply to everyone (services/access.py). A fresh clone's
data: the shipped model and the embedded sample, no dataset, no network.

On the phone: Explore is the first tab and every tab is one tap away (none in the "…" menu), the header is one
column (the data notice as wide as the page, the checkpoint's label whole), an upload shows its model input, two
views and a class guess, and no element is wider than the screen, before and after the upload and in the Train
tab. The reload: a visitor starts a run, reloads the page and stops it (their token is kept in the browser);
another browser cannot stop it.

Screenshots go to tests/artifacts/; with VICREG_DOC_SCREENSHOTS=1 also to docs/ (phone-header.png,
phone-explore.png, each under 300 KB), which docs/app.md shows. Needs Chromium, as test_browser.py.
"""
import io
import os
import time

import pytest
from app_fixtures import demo_pair, offline_env, start_app  # noqa: F401
from PIL import Image
from test_browser import ART, CLASSES, all_cores, launch, playwright, wait_for  # noqa: F401

from vicreg.runfiles.names import checkpoint_stem
from vicreg.training.data import read_packed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHONE = {"width": 390, "height": 844}
# Every element drawn wider than the screen or beyond its edges: an SVG counts by its own box (a plot's inner
# layers may reach past a clipped edge), and plotly's measuring copy sits far off screen on purpose.
TOO_WIDE = """() => { const W = window.innerWidth, out = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('#js-plotly-tester') || (el.closest('svg') && el.tagName.toLowerCase() !== 'svg')) continue;
    const r = el.getBoundingClientRect();
    if (!r.width || !r.height || getComputedStyle(el).visibility === 'hidden') continue;
    if (r.left < -1 || r.right > W + 1) out.push(`${el.tagName}#${el.id}.${el.className} ${r.left}..${r.right}`);
  }
  return {scroll: document.documentElement.scrollWidth, inner: W, wide: out.slice(0, 10), n: out.length}; }"""


@pytest.fixture(scope="module")
def public_app(tmp_path_factory, demo_pair):  # noqa: F811
    folder = str(tmp_path_factory.mktemp("public"))
    env = offline_env(folder, demo_pair, SPACE_ID="vicreg-tests/phone", VICREG_STORAGE=os.path.join(folder, "storage"),
                      VICREG_ADMIN_TOKEN="", VICREG_OPEN_ACCESS="")
    app = start_app(env, os.path.join(folder, "app.log"))
    yield app
    app.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright() as p:
        b = launch(p)
        yield b
        b.close()


def open_page(browser, url):
    page = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#explore-upload")
    return page


def fits(page) -> dict:
    got = page.evaluate(TOO_WIDE)
    assert got["inner"] == PHONE["width"] and got["scroll"] <= got["inner"] and got["n"] == 0, got
    return got


def save(png: bytes, name: str) -> int:
    """The screenshot as a small PNG (256 colours) in tests/artifacts/, and in docs/ when asked; its size."""
    im = Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    folders = [ART] + ([os.path.join(ROOT, "docs")] if os.environ.get("VICREG_DOC_SCREENSHOTS") == "1" else [])
    for folder in folders:
        with open(os.path.join(folder, name), "wb") as f:
            f.write(buf.getvalue())
    return len(buf.getvalue())


def test_phone_explore_first_one_column_header_and_everything_fits(browser, public_app, demo_pair, tmp_path):  # noqa: F811
    page = open_page(browser, public_app.url)
    tabs = page.get_by_role("tab")
    assert tabs.all_inner_texts() == ["Explore", "Train", "Evaluate", "UMAP"]
    assert all(t.is_visible() and t.bounding_box()["x"] + t.bounding_box()["width"] <= PHONE["width"]
               for t in tabs.all())  # each one tap away: none hides in the "…" menu
    assert page.locator(".overflow-dropdown button").count() == 0
    assert page.get_by_role("tab", name="Explore").get_attribute("aria-selected") == "true"  # and Explore first
    notice, download = page.locator("#data-status").bounding_box(), page.locator("#data-download").bounding_box()
    assert notice["width"] >= 0.8 * PHONE["width"] and download["height"] < 80, (notice, download)
    assert download["y"] >= notice["y"] + notice["height"] - 1  # one column: the button below the notice
    label = page.locator("#checkpoint input")
    assert label.input_value().startswith(f"{checkpoint_stem(demo_pair[0])} · epoch")
    assert label.evaluate("e => e.scrollWidth <= e.clientWidth")
    fits(page)
    print(f"\nphone-header.png: {save(page.screenshot(), 'phone-header.png') / 1024:.0f} KB")
    z = read_packed(demo_pair[1])
    photo = Image.fromarray(z["test_x"][42].transpose(1, 2, 0)).resize((200, 150), Image.BICUBIC)
    photo.save(tmp_path / "phone_photo.jpg", "JPEG", quality=90)
    page.locator("#explore-upload input[type=file]").set_input_files(str(tmp_path / "phone_photo.jpg"))
    page.wait_for_selector("#explore-status:has-text('Map position')", timeout=120_000)
    for sel in ("#explore-original img", "#explore-view1 img", "#explore-view2 img", "#explore-embedding img",
                "#explore-map img"):  # images load as they scroll into view
        img = page.locator(sel)
        img.scroll_into_view_if_needed()
        wait_for(page, f"() => document.querySelector('{sel}').naturalWidth", lambda w: w > 0, 30, sel)
        box = img.bounding_box()
        assert 0 <= box["x"] and box["x"] + box["width"] <= PHONE["width"], (sel, box)
    assert "crop at (" in page.locator("#explore-params1").inner_text()
    guess = page.locator("#explore-guess").inner_text()
    assert any(c in guess for c in CLASSES), guess
    assert page.locator("#explore-neighbours img").count() == 8
    fits(page)
    page.evaluate("window.scrollTo(0, 0)")
    top = page.locator("#explore-status").bounding_box()["y"]
    end = page.locator("#explore-guess").bounding_box()
    shot = page.screenshot(full_page=True, clip={"x": 0, "y": top - 8, "width": PHONE["width"],
                                                 "height": end["y"] + end["height"] + 8 - (top - 8)})
    size = save(shot, "phone-explore.png")
    print(f"phone-explore.png: {size / 1024:.0f} KB")
    assert size < 300 * 1024
    page.get_by_role("tab", name="Train").click()  # one tap
    page.wait_for_selector("#train-start")
    time.sleep(1)  # the charts draw when the tab shows
    fits(page)


def test_a_visitor_stops_their_own_run_after_a_reload(browser, public_app):
    page = open_page(browser, public_app.url)
    page.get_by_role("tab", name="Train").click()
    assert "only you (or the admin) can stop it" in page.locator("#train-public-note").inner_text()
    page.get_by_text("Advanced").click()
    box = page.locator("#train-threads input")
    box.fill("1")  # a CPU shared with the browser
    box.press("Tab")
    page.locator("#train-start").click()
    page.wait_for_selector("#train-message:has-text('started')")
    assert "only you can stop it" in page.locator("#train-message").inner_text()
    page.wait_for_selector("#train-progress:has-text('running')", timeout=90_000)
    page.reload()
    page.wait_for_selector("#explore-upload")
    page.get_by_role("tab", name="Train").click()
    page.wait_for_selector("#train-progress:has-text('running')", timeout=30_000)
    other = open_page(browser, public_app.url)  # another visitor: no token in that browser
    other.get_by_role("tab", name="Train").click()
    other.locator("#train-stop").click()
    other.wait_for_selector("#train-message:has-text('Only the visitor who started this run')")
    page.locator("#train-stop").click()  # the starter, after the reload
    page.wait_for_selector("#train-message:has-text('stopping after the current step')")
    page.wait_for_selector("#train-progress:has-text('stopped')", timeout=90_000)
    progress = page.locator("#train-progress").inner_text()
    assert "checkpoint visitor-" in progress and "stopped at epoch" in progress, progress
