"""App latency benchmark (not a test): start-up time, and upload -> views + embedding + neighbours +
UMAP position through the real API (gradio_client), with a trained checkpoint and a warm cache.

    PYTHONPATH=. VICREG_DATA=/path/to/cifar10 python bench/app_bench.py [--checkpoint PATH] [-n 50]

Without --checkpoint it uses the newest checkpoint in VICREG_CHECKPOINTS (default checkpoints/), or
trains a 4-step one in a temporary folder if there is none. The feature index and UMAP (10,000
test images unless --map-points says otherwise) are built by an untimed warm-up call, and cached
under VICREG_CACHE for the next run. Targets: p95 <= 0.5 s per upload, start <= 10 s.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(env: dict, log) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    full = {**os.environ, **env, "PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONPATH": ROOT}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "app.py")], cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT)
    while time.perf_counter() - t0 < 120:
        if proc.poll() is not None:
            raise SystemExit(f"app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return proc, url, time.perf_counter() - t0
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("app did not start within 120 s")


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def summary(name: str, xs: list[float], scale: float = 1000, unit: str = "ms") -> str:
    return (f"{name:<44} n={len(xs):3d}  p50 {statistics.median(xs) * scale:7.1f} {unit}  "
            f"p95 {pct(xs, 95) * scale:7.1f} {unit}  max {max(xs) * scale:7.1f} {unit}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint")
    ap.add_argument("-n", type=int, default=50, help="timed uploads")
    ap.add_argument("--map-points", type=int, default=10000)
    ap.add_argument("--starts", type=int, default=3, help="app start-up measurements")
    args = ap.parse_args()

    from gradio_client import Client, handle_file

    from vicreg.checkpoint import list_checkpoints
    from vicreg.config import default_cache_dir, default_checkpoint_dir, default_data_root

    data = os.path.abspath(default_data_root())
    ckpt = args.checkpoint
    if not ckpt:
        found = list_checkpoints(default_checkpoint_dir())
        if found:
            ckpt = found[0][0]
        else:
            sys.path.insert(0, os.path.join(ROOT, "tests"))
            from app_fixtures import make_checkpoint

            from vicreg.data import load_dataset

            print("no checkpoint found: training a 4-step one in a temporary folder")
            ckpt = make_checkpoint(load_dataset(data), tempfile.mkdtemp(prefix="vicreg-bench-"))
    ckpt = os.path.abspath(ckpt)
    env = {"VICREG_CHECKPOINTS": os.path.dirname(ckpt), "VICREG_CACHE": default_cache_dir(), "VICREG_DATA": data,
           "VICREG_MAP_POINTS": str(args.map_points)}
    print(f"checkpoint {ckpt}\ncache {env['VICREG_CACHE']}  data {data}  map points {args.map_points}  "
          f"cpus {os.cpu_count()}  load avg {os.getloadavg()[0]:.2f}")
    log = open(os.path.join(tempfile.gettempdir(), "vicreg_app_bench.log"), "w")

    starts = []
    for _ in range(max(1, args.starts)):
        proc, url, secs = start_app(env, log)
        starts.append(secs)
        stop_app(proc)
    proc, url, secs = start_app(env, log)
    starts.append(secs)
    try:
        test_dir = os.path.join(data, "test")
        files = [os.path.join(test_dir, c, f) for c in sorted(os.listdir(test_dir))
                 for f in sorted(os.listdir(os.path.join(test_dir, c)))[100:100 + (args.n + 9) // 10]][: args.n]
        client = Client(url, verbose=False, download_files=False)
        t0 = time.perf_counter()
        client.predict(index=0, checkpoint=ckpt, api_name="/explore_test_image")  # builds/loads the index
        client.predict(checkpoint=ckpt, api_name="/umap")  # fits/loads the UMAP
        print(f"warm-up (index + UMAP, cached after the first run): {time.perf_counter() - t0:.1f}s")
        results = {}
        for dl in (False, True):
            c = Client(url, verbose=False, download_files=dl)
            c.predict(image=handle_file(files[0]), checkpoint=ckpt, api_name="/explore_upload")
            wall, inner = [], []
            for f in files:
                t = time.perf_counter()
                out = c.predict(image=handle_file(f), checkpoint=ckpt, api_name="/explore_upload")
                wall.append(time.perf_counter() - t)
                info = out[10]
                assert len(info["neighbours"]) == 8 and info["map_xy"] is not None and out[2] and out[4], out[0]
                inner.append(info["seconds"])
            results[dl] = (wall, inner)
    finally:
        stop_app(proc)
    print()
    print(summary("app start -> serving", starts, 1, "s"))
    print(f"{'':<44} each: {', '.join(f'{s:.2f}' for s in starts)} s")
    print(summary("upload via API (outputs as URLs)", results[False][0]))
    print(summary("upload via API + client downloads 13 files", results[True][0]))
    print(summary("  of which server compute (decode..map)", results[False][1]))
    ok = pct(results[False][0], 95) <= 0.5 and max(starts) <= 10
    print(f"\ntargets p95 <= 0.5 s, start <= 10 s: {'met' if ok else 'NOT met'} (load avg now {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
