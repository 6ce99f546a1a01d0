"""Ten uploads in a row on one page, in a real Chromium: the first training image of each CIFAR-10 class from the
embedded sample, each as its own PNG, through the Explore tab's file upload, on a fresh clone's offline app (the
shipped default model, no dataset, no network). Each upload gets its own kNN class guess (one of the ten class
names, shown with that upload's file name in the status) and its neighbours.

Whether the guesses are right depends on the model, so it is not asserted here; the true class -> guess line is
printed (run with -s to see it). Needs Chromium, as test_browser.py.
"""
import json
import os
import re

import numpy as np
from app_fixtures import demo_pair, offline_app  # noqa: F401
from PIL import Image
from test_browser import ART, CLASSES, all_cores, page, wait_for  # noqa: F401

from vicreg.training.data import read_packed

CAPTION = re.compile(r"(\w+) · ([01]\.\d{3}) · #(\d+)")
# status, guess and neighbours read in one go, so that all three come from the same update of the page
SHOWN = """() => { const text = s => { const el = document.querySelector(s); return el ? el.innerText : ''; };
                   return {status: text('#explore-status'), guess: text('#explore-guess .output-class').trim(),
                           neighbours: text('#explore-neighbours'),
                           thumbs: document.querySelectorAll('#explore-neighbours img').length}; }"""


def first_train_images(sample: str, folder) -> list[tuple[str, str]]:
    """(class name, PNG path) for the first training image of each class in the embedded sample (CHW uint8)."""
    z = read_packed(sample)
    xs, ys = z["train_x"], z["train_y"]
    classes = json.loads(str(z["classes"])) if "classes" in z else list(CLASSES)
    assert list(classes) == list(CLASSES)
    out = []
    for c, cls in enumerate(classes):
        row = int(np.flatnonzero(ys == c)[0])
        path = folder / f"first-train-{cls}.png"
        Image.fromarray(xs[row].transpose(1, 2, 0)).save(path)
        out.append((cls, str(path)))
    return out


def ready_for(name: str):
    """Whether the page shows the answer to the upload named `name`: its status, a guess and the neighbours."""
    def check(shown: dict) -> bool:
        return (f"uploaded {name} (" in shown["status"] and bool(shown["guess"]) and shown["thumbs"] > 0
                and bool(CAPTION.search(shown["neighbours"])))
    return check


def upload(page, path: str) -> None:  # noqa: F811
    """Put `path` in the Explore tab's upload. A single-file upload holding a file shows it in place of its
    file input, so the previous one is cleared first."""
    box = page.locator("#explore-upload")
    if box.locator("input[type=file]").count() == 0:
        box.get_by_label("Clear").first.click()
    box.locator("input[type=file]").wait_for(state="attached", timeout=60_000)
    box.locator("input[type=file]").set_input_files(path)


def test_ten_uploads_each_get_their_own_guess(page, demo_pair, tmp_path):  # noqa: F811
    images = first_train_images(demo_pair[1], tmp_path)
    page.get_by_role("tab", name="Explore").click()
    guesses = {}
    for cls, path in images:
        name = os.path.basename(path)
        upload(page, path)
        shown = wait_for(page, SHOWN, ready_for(name), timeout=600, what=f"the guess for {name}")
        assert f"uploaded {name} (32×32 RGB, PNG)" in shown["status"], shown["status"]
        assert shown["guess"] in CLASSES, shown["guess"]
        captions = CAPTION.findall(shown["neighbours"])
        assert len(captions) == 8 and shown["thumbs"] == 8, shown["neighbours"]
        assert all(c in CLASSES and int(i) < 6000 for c, _, i in captions), captions
        guesses[cls] = shown["guess"]
    assert list(guesses) == list(CLASSES) and all(g in CLASSES for g in guesses.values()), guesses
    page.screenshot(path=os.path.join(ART, "browser_guess_last.png"), full_page=True)
    right = sum(t == g for t, g in guesses.items())
    print("\nfirst train image per class, true -> guess: "
          + ", ".join(f"{t}->{g}" for t, g in guesses.items()) + f" ({right}/10 right)")
