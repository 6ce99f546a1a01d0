"""App latency benchmark (not a test): start-up time, and upload -> every output (views, embedding,
neighbours, kNN guess, map position) through the real API (gradio_client), on a fresh clone's first
start: no dataset, an empty cache and HOME, the default demo checkpoint and the embedded sample.

    python -m bench.app_bench [-n 30] [--starts 3]          # from the repository root

The default checkpoint and the sample are the repo's shipped ones when both exist; otherwise
provisional ones are built from the CIFAR-10 copy at $VICREG_DATA (bench/harness.py, shared with the
tests). Uploads are 200x150 JPEG "photos" made from the sample's test images. Targets: p95 <= 0.5 s
per upload, start <= 10 s.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

from bench.harness import ROOT, AppProcess, demo_files
from vicreg.training.data import read_packed


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def summary(name: str, xs: list[float], scale: float = 1000, unit: str = "ms") -> str:
    return (f"{name:<44} n={len(xs):3d}  p50 {statistics.median(xs) * scale:7.1f} {unit}  "
            f"p95 {pct(xs, 95) * scale:7.1f} {unit}  max {max(xs) * scale:7.1f} {unit}")


def first_start_env(folder: str, checkpoint: str, sample: str) -> dict:
    for d in ("home", "cache", "checkpoints"):
        os.makedirs(os.path.join(folder, d), exist_ok=True)
    return {"VICREG_DATA": os.path.join(folder, "no-data-here"), "VICREG_CACHE": os.path.join(folder, "cache"),
            "HOME": os.path.join(folder, "home"), "VICREG_CHECKPOINTS": os.path.join(folder, "checkpoints"),
            "VICREG_DEFAULT_CHECKPOINT": checkpoint, "VICREG_SAMPLE": sample, "HF_HUB_OFFLINE": "1"}


def photos(sample: str, n: int, folder: str) -> list[str]:
    test_x = read_packed(sample)["test_x"]
    out = []
    for k, i in enumerate(np.linspace(0, len(test_x) - 1, n).round().astype(int)):
        im = Image.fromarray(test_x[i].transpose(1, 2, 0)).resize((200, 150), Image.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        path = os.path.join(folder, f"photo_{k:03d}.jpg")
        with open(path, "wb") as f:
            f.write(buf.getvalue())
        out.append(path)
    return out


def timed_uploads(url: str, checkpoint: str, files: list[str], download: bool) -> tuple[list[float], list[float]]:
    from gradio_client import Client, handle_file

    # plain http on loopback: ssl_verify=False spares gradio_client a certificate store per request and
    # per downloaded file (about 28 ms of CPU each), which would be timed as if it were the app's
    c = Client(url, verbose=False, download_files=download, ssl_verify=False)
    c.predict(image=handle_file(files[0]), checkpoint=checkpoint, api_name="/explore_upload")  # warm-up
    wall, inner = [], []
    for f in files:
        t = time.perf_counter()
        out = c.predict(image=handle_file(f), checkpoint=checkpoint, api_name="/explore_upload")
        wall.append(time.perf_counter() - t)
        info = out[10]
        assert len(info["neighbours"]) == 8 and info["map_xy"] is not None and info["prediction"], out[0]
        inner.append(info["seconds"])
    return wall, inner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=30, help="timed uploads")
    ap.add_argument("--starts", type=int, default=3, help="app start-up measurements")
    args = ap.parse_args()
    checkpoint, sample = demo_files(os.environ.get("VICREG_DATA") or os.path.join(ROOT, "..", "shared", "data",
                                                                                   "cifar10"))
    work = tempfile.mkdtemp(prefix="vicreg-app-bench-")
    print(f"checkpoint {checkpoint}\nsample {sample}\ncpus {os.cpu_count()}  load avg {os.getloadavg()[0]:.2f}")
    starts = []
    for k in range(max(1, args.starts)):
        app = AppProcess(first_start_env(os.path.join(work, f"start{k}"), checkpoint, sample),
                         os.path.join(work, f"start{k}.log"))
        starts.append(app.start_seconds)
        app.stop()
    app = AppProcess(first_start_env(os.path.join(work, "run"), checkpoint, sample), os.path.join(work, "run.log"))
    starts.append(app.start_seconds)
    try:
        files = photos(sample, args.n, work)
        results = {dl: timed_uploads(app.url, checkpoint, files, dl) for dl in (False, True)}
    finally:
        app.stop()
    print()
    print(summary("fresh start -> serving", starts, 1, "s"))
    print(f"{'':<44} each: {', '.join(f'{s:.2f}' for s in starts)} s")
    print(summary("upload via API (outputs as URLs)", results[False][0]))
    print(summary("upload via API + client downloads 5 files", results[True][0]))
    print(summary("  of which server compute (decode..map)", results[False][1]))
    ok = pct(results[False][0], 95) <= 0.5 and max(starts) <= 10
    verdict = "met" if ok else "NOT met"
    print(f"\ntargets p95 <= 0.5 s, start <= 10 s: {verdict} (load avg now {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
