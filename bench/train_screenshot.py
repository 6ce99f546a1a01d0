"""The Train tab as a visitor sees it after two minutes of the Quick CPU demo (not a test): a fresh app with
no dataset (the embedded sample), Debian's chromium, Start pressed, a screenshot `--after` seconds later.

    python -m bench.train_screenshot [--out docs/train.png] [--after 120]

A fresh app has no previous run, so the grey curves are the shipped run of the preset (assets/reference/).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from bench.harness import AppProcess

CHROMIUM = os.environ.get("VICREG_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/train.png")
    ap.add_argument("--after", type=float, default=120.0)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        env = {"VICREG_DATA": os.path.join(tmp, "no-data"), "VICREG_CACHE": os.path.join(tmp, "cache"),
               "VICREG_CHECKPOINTS": os.path.join(tmp, "checkpoints"), "HOME": tmp}
        app = AppProcess(env, os.path.join(tmp, "app.log"), timeout=120)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(app.url)
                page.wait_for_selector("#explore-upload")
                page.get_by_role("tab", name="Train").click()
                page.get_by_label("Quick CPU demo").check()
                page.locator("#train-start").click()
                t0 = time.time()
                page.wait_for_selector("#train-message:has-text('started')")
                time.sleep(max(0.0, args.after - (time.time() - t0)))
                page.locator("#knn-plot").scroll_into_view_if_needed()
                page.screenshot(path=args.out, full_page=True)
                print(f"{args.out}: {time.time() - t0:.0f} s after Start;",
                      page.locator("#train-progress").inner_text().splitlines()[0])
                browser.close()
        finally:
            app.stop()


if __name__ == "__main__":
    main()
