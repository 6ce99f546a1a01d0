"""A fresh clone's first minute in a real Chromium (Playwright): no dataset (VICREG_DATA points nowhere),
an empty cache and HOME, no network. The app must serve within 10 s; the Evaluate tab shows the default
model's stored accuracy and the UMAP tab the embedded sample's map without pressing a heavy button; an
uploaded photo gets its views, embedding, neighbours and a kNN guess; the Quick preset trains.

Needs Debian's chromium at /usr/bin/chromium (`apt-get install -y chromium`). Without it these tests are
skipped, so a fresh clone's test command passes; CI installs it and sets VICREG_REQUIRE_BROWSER=1, under
which a missing browser is a failure, not a skip. Screenshots go to tests/artifacts/.
"""
import os
import re
import time

import pytest
from app_fixtures import demo_pair, offline_app  # noqa: F401
from PIL import Image

from vicreg.core.presets import PRESETS
from vicreg.runfiles.checkpoint import read_meta
from vicreg.runfiles.names import checkpoint_stem
from vicreg.training.data import read_packed

CHROMIUM = os.environ.get("VICREG_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

LOSS_X = """() => { const el = document.querySelector('#loss-plot .js-plotly-plot');
                    const t = el && el.data ? el.data.find(t => t.name === 'loss') : null;
                    return t ? Array.from(t.x) : []; }"""
# the learning monitor's points, its untrained baseline and the live map's refresh count, as the page draws them
LEARNING = """() => { const acc = document.querySelector('#knn-plot .js-plotly-plot');
                      const map = document.querySelector('#train-map .js-plotly-plot');
                      const guess = t => (t.name || '').startsWith("Explore's guess");
                      const t = acc && acc.data ? acc.data.find(guess) : null;
                      const notes = acc && acc.layout && acc.layout.annotations ? acc.layout.annotations : [];
                      const title = map && map.layout && map.layout.title ? (map.layout.title.text || '') : '';
                      const m = title.match(/map (\\d+)/);
                      return {points: t ? t.x.length : 0,
                              untrained: notes.map(a => a.text).filter(s => s && s.startsWith('untrained')),
                              maps: m ? parseInt(m[1]) : 0}; }"""
MAP_POINTS = """() => { const el = document.querySelector('#umap-plot .js-plotly-plot');
                        return el && el.data ? el.data.filter(t => t.name !== 'your image')
                                                      .reduce((n, t) => n + t.x.length, 0) : 0; }"""
MAP_NAMES = """() => { const el = document.querySelector('#umap-plot .js-plotly-plot');
                       return el && el.data ? el.data.map(t => t.name) : []; }"""


@pytest.fixture(scope="module", autouse=True)
def all_cores():
    """Under pytest-xdist each worker keeps to one core (conftest.py); the browser, the app it drives and that
    app's training job need more than one, or the page stops answering while a run trains. Autouse, so it is
    set up before the app starts (which inherits it), and put back afterwards."""
    if not hasattr(os, "sched_getaffinity"):
        yield
        return
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
    yield
    os.sched_setaffinity(0, mine)


def playwright():
    """Playwright's sync API, once chromium is known to be there: skipped without it on a user's machine,
    failed where VICREG_REQUIRE_BROWSER=1 (CI installs it). The browser test files all start here."""
    if not os.path.exists(CHROMIUM):
        why = (f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium` "
               "(or point VICREG_CHROMIUM at a chromium binary); the browser tests need a real browser")
        if os.environ.get("VICREG_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    os.makedirs(ART, exist_ok=True)
    return sync_playwright()


def launch(p, attempts: int = 3):
    """Chromium, started by playwright `p`. A launch that dies before its first page (a starved or briefly
    overloaded machine) is tried again after a pause; the last failure is reported with chromium's own log,
    only its error lines (less the D-Bus ones a container always prints), so the cause shows in a short CI excerpt."""
    text: list[str] = []
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            time.sleep(5 * attempt)
        try:
            return p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=120_000)
        except Exception as e:  # playwright's Error/TargetClosedError; nothing else is raised here
            text = str(e).splitlines() or [repr(e)]
    said = [ln for ln in text if ("[err]" in ln and "dbus" not in ln) or "process did exit" in ln]
    pytest.fail(f"chromium at {CHROMIUM} did not start ({attempts} tries): {text[0]}\n" + "\n".join(said[-25:]),
                pytrace=False)


@pytest.fixture(scope="module")
def page(offline_app):  # noqa: F811
    with playwright() as p:
        browser = launch(p)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(60_000)
        pg.goto(offline_app.url)
        pg.wait_for_selector("#explore-upload")  # Explore is the first tab
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


def test_serves_offline(offline_app):  # noqa: F811
    """A fresh clone serves with no dataset, cache or network (within the harness's 60 s); the time is printed,
    not asserted: it depends on the machine and on what else runs (docs/benchmarks.md has it measured alone)."""
    print(f"\nfresh start to serving: {offline_app.start_seconds:.1f}s")
    assert offline_app.proc.poll() is None and "Traceback" not in offline_app.tail(), offline_app.tail()


def test_stored_accuracy_and_map_at_once(page, demo_pair):  # noqa: F811
    rep = read_meta(demo_pair[0])["report"]
    page.get_by_role("tab", name="Evaluate").click()
    page.wait_for_selector("#eval-summary:has-text('random init')", timeout=60_000)
    rows = page.locator("#eval-summary table tbody tr")
    cells = [rows.nth(i).locator("td").all_inner_texts() for i in range(rows.count())]
    assert [c[:2] for c in cells] == [[checkpoint_stem(demo_pair[0]), f"{100 * rep['linear_top1']:.1f}%"],
                                      ["random init", f"{100 * rep['baseline']['linear_top1']:.1f}%"]], cells
    page.screenshot(path=os.path.join(ART, "browser_evaluate.png"), full_page=True)
    page.get_by_role("tab", name="UMAP").click()  # no button pressed: the sample's map is already there
    n = wait_for(page, MAP_POINTS, lambda n: n >= 1000, timeout=60, what="the sample's map")
    z = read_packed(demo_pair[1])
    assert n == len(z["umap"])
    assert sorted(page.evaluate(MAP_NAMES)) == sorted(CLASSES)
    # the status settles once no refresh is in flight (a pending one shows its timer, "0.1s", above the text)
    page.wait_for_function("s => document.querySelector('#umap-status').innerText.trim().startsWith(s)",
                           arg=f"{checkpoint_stem(demo_pair[0])}: ", timeout=30_000)
    page.screenshot(path=os.path.join(ART, "browser_umap.png"), full_page=True)


def test_uploaded_photo(page, demo_pair, tmp_path):  # noqa: F811
    z = read_packed(demo_pair[1])
    photo = Image.fromarray(z["test_x"][42].transpose(1, 2, 0)).resize((200, 150), Image.BICUBIC)
    f = tmp_path / "holiday_photo.jpg"
    photo.save(f, "JPEG", quality=90)
    page.get_by_role("tab", name="Explore").click()
    page.locator("#explore-upload input[type=file]").set_input_files(str(f))
    page.wait_for_selector("#explore-status:has-text('Map position')", timeout=120_000)
    status = page.locator("#explore-status").inner_text()
    assert "uploaded holiday_photo.jpg (200×150 RGB, JPEG)" in status and "resized from" in status
    assert page.locator("#explore-view1 img").count() == 1 and page.locator("#explore-view2 img").count() == 1
    assert "crop at (" in page.locator("#explore-params1").inner_text()
    assert page.locator("#explore-embedding img").count() == 1 and page.locator("#explore-map img").count() == 1
    assert page.locator("#explore-neighbours img").count() >= 8
    captions = re.findall(r"(\w+) · ([01]\.\d{3}) · #(\d+)", page.locator("#explore-neighbours").inner_text())
    assert len(captions) == 8 and all(c in CLASSES and int(i) < 6000 for c, _, i in captions), captions
    sims = [float(s) for _, s, _ in captions]
    assert sims == sorted(sims, reverse=True)
    guess = page.locator("#explore-guess").inner_text()
    assert any(c in guess for c in CLASSES), guess
    page.screenshot(path=os.path.join(ART, "browser_explore.png"), full_page=True)


def test_quick_preset_trains(page):
    page.get_by_role("tab", name="Train").click()
    page.get_by_label("Quick CPU demo").check()
    page.get_by_text("Advanced").click()
    set_number(page, "train-threads", 1)  # robust on a CPU shared with other jobs
    t0 = time.time()
    page.locator("#train-start").click()
    page.wait_for_selector("#train-message:has-text('started')")
    assert "embedded 2,000-image CIFAR-10 sample" in page.locator("#train-message").inner_text()
    x = wait_for(page, LOSS_X, lambda x: len(x) >= 3, timeout=150, what="step 3 of the quick preset")
    print(f"\nStart -> step 3 on the chart: {time.time() - t0:.1f}s")
    assert time.time() - t0 <= 150 and x[:3] == [1, 2, 3]  # one point per step, from the first
    per_epoch = 2000 // PRESETS["quick_demo"]["batch_size"]
    progress = page.locator("#train-progress").inner_text()
    total = int(re.search(r"step \d+/(\d+)", progress).group(1))  # whole epochs fitted to the time budget
    assert "quick_demo" in progress and "running" in progress and total % per_epoch == 0, progress
    assert re.search(r"\d+ epochs? fits? the 130-second budget here", progress), progress
    page.screenshot(path=os.path.join(ART, "browser_train_running.png"), full_page=True)
    page.reload()  # a reloaded page shows the same run (in the Train tab: Explore is the first)
    page.get_by_role("tab", name="Train").click()
    page.wait_for_selector("#train-progress:has-text('running')", timeout=30_000)
    again = wait_for(page, LOSS_X, lambda a: len(a) >= len(x), timeout=60, what="the charts after a reload")
    assert again[: len(x)] == x
    # what learning looks like within the 2-minute demo: the untrained start on the chart, at least 4 points of
    # the monitor (the untrained one included) and its map refreshed at least twice after the untrained one.
    # The monitor's points are spaced by seconds of training, not wall-clock time (they keep under a tenth of it):
    # on a CPU of its own they come within the first minute, on a slow CPU shared with the other test worker only
    # by the run's end (its final point included), so the check waits for whichever comes first, then stops the
    # run if it is still going (bench/train_screenshot.py shows the page at 2 minutes on a CPU of its own)
    seen = wait_for(page, LEARNING, lambda v: v["points"] >= 4 and v["untrained"] and v["maps"] >= 3,
                    timeout=600, what="the untrained baseline, 4 monitor points and a map refreshed twice")
    print(f"Start -> {seen}: {time.time() - t0:.1f}s")
    page.screenshot(path=os.path.join(ART, "browser_train_learning.png"), full_page=True)
    if "running" in page.locator("#train-progress").inner_text():
        page.locator("#train-stop").click()
    page.wait_for_selector("#train-progress:has-text('stopped'), #train-progress:has-text('finished')",
                           timeout=120_000)
    assert "checkpoint quick_demo" in page.locator("#train-progress").inner_text()
    page.screenshot(path=os.path.join(ART, "browser_train_stopped.png"), full_page=True)
