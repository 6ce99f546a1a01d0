"""What one GPU does with this code, in one table (not a test): run it on a machine with a GPU and a few minutes.

    bash bench/gpu_check.sh                 # the whole check (stopped at 8 minutes; not yet timed on a GPU)
    python -m bench.gpu_check --small       # the same parts, sized for a CPU (what tests/test_gpu_check.py runs)

Rows, each measured in this run on this machine:
  * the GPU tests (tests/test_gpu_path.py, tests/test_gpu_space.py): passed, skipped, failed;
  * the training step at batch 256 (`--preset gpu`'s), eager and torch.compile'd: pairs/s, compile seconds;
  * the peak GPU memory of that step;
  * one epoch of `--preset gpu` through the command line (TRAIN, then EVALUATE): pairs/s, linear probe and kNN.
The data is VICREG_DATA when it holds CIFAR-10, else the repository's embedded sample (2,000 training images).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

from bench.harness import demo_files
from bench.throughput import _step_fn, _sync, _timeit
from vicreg.core.augment import two_views
from vicreg.core.config import TrainConfig
from vicreg.core.runtime import cpu_kind, make_runtime
from vicreg.runfiles.metrics import read_metrics
from vicreg.runfiles.names import metrics_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_TESTS = ["tests/test_gpu_path.py", "tests/test_gpu_space.py"]
# --small: what a CPU does in seconds (a narrow backbone, tiny batches), so every part of the check is run by the
# suite on a machine without a GPU
SMALL = dict(batch=16, steps=2, width=8, images=64)
FULL = dict(batch=256, steps=10, width=64, images=0)


def summary_counts(text: str) -> dict[str, int]:
    """pytest's summary line ("3 passed, 9 skipped in 4.2s") as counts; a line it cannot read counts as one error."""
    found = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|skipped|failed|errors?|deselected)", text)}
    return found or {"error": 1}


def run_tests() -> dict[str, int]:
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *GPU_TESTS], cwd=ROOT,
                         capture_output=True, text=True)
    return summary_counts(out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr)


def step_rates(size: dict, compiled: bool) -> dict[str, float]:
    """Pairs/s of augmentation + the training step on one batch, eager (and compiled), and the peak memory."""
    rt = make_runtime("auto")
    cfg = TrainConfig().with_values({"batch_size": size["batch"], "model.width": size["width"]})
    images = torch.randint(0, 256, (size["batch"], 3, 32, 32), dtype=torch.uint8, device=rt.device)
    g = torch.Generator(device=rt.device).manual_seed(0)
    out: dict[str, float] = {}
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step = _step_fn(cfg, rt)
    views = lambda: two_views(images, cfg.augment, g)  # noqa: E731 (augmentation is part of the step timed)
    out["eager_pairs_per_s"] = size["batch"] / _timeit(lambda: step(*views()), size["steps"], 2)
    if rt.device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if compiled:
        t = time.perf_counter()
        step_c = _step_fn(cfg, rt, compiled=True)
        step_c(*views())
        _sync()
        out["compile_s"] = time.perf_counter() - t
        out["compiled_pairs_per_s"] = size["batch"] / _timeit(lambda: step_c(*views()), size["steps"], 2)
    return out


def _data() -> str:
    given = os.environ.get("VICREG_DATA", "")
    return given if os.path.isdir(os.path.join(given, "train")) else demo_files(None)[1]


def one_epoch(size: dict, folder: str, data: str) -> dict[str, float]:
    """One epoch of `--preset gpu` (on a CPU: a few of its steps at a narrow width) through the command line, then
    EVALUATE on it: the logged pairs/s (the steady part: after the first logged window) and its two figures."""
    small = ["--train_subset", str(size["images"]), "--batch_size", str(size["batch"]), "--width",
             str(size["width"]), "--knn_train", "64", "--knn_test", "32"] if size["images"] else []
    train = [sys.executable, "-m", "vicreg", "TRAIN", "--preset", "gpu", "--epochs", "1", "--name", "gpu_check",
             "--checkpoint_dir", folder, "--data", data, *small]
    t = time.perf_counter()
    subprocess.run(train, cwd=ROOT, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    rates = [m["pairs_per_s"] for m in read_metrics(metrics_path(folder, "gpu_check"))
             if "pairs_per_s" in m]
    report = os.path.join(folder, "report.json")
    probe = ["--probe_epochs", "2"] if size["images"] else []
    checkpoint = os.path.join(folder, "gpu_check.safetensors")
    evaluate = [sys.executable, "-m", "vicreg", "EVALUATE", "--model_path", checkpoint, "--data", data, "--output",
                report, *probe]
    subprocess.run(evaluate, cwd=ROOT, check=True, capture_output=True, text=True)
    with open(report) as f:
        figures = json.load(f)
    steady = rates[1:] or rates
    return {"epoch_s": seconds, "pairs_per_s": sum(steady) / max(len(steady), 1),
            "linear": figures["linear_top1"], "knn": figures["knn_top1"]}


def table(r: dict) -> str:
    """The one table the check prints."""
    t, s, e = r["tests"], r["step"], r["epoch"]
    rows = [("device", r["device"]),
            ("GPU tests", ", ".join(f"{n} {k}" for k, n in sorted(t.items()))),
            (f"training step, batch {r['batch']}, eager", f"{s['eager_pairs_per_s']:.1f} pairs/s")]
    if "compiled_pairs_per_s" in s:
        ratio = s["compiled_pairs_per_s"] / s["eager_pairs_per_s"]
        rows.append(("training step, torch.compile", f"{s['compiled_pairs_per_s']:.1f} pairs/s "
                     f"({ratio:.2f}x; compiled in {s['compile_s']:.0f} s)"))
    rows.append(("peak GPU memory of the step", f"{s['peak_gib']:.2f} GiB" if "peak_gib" in s else "n/a (no GPU)"))
    rows += [("one epoch of --preset gpu", f"{e['epoch_s']:.0f} s, {e['pairs_per_s']:.1f} pairs/s"),
             ("EVALUATE after it", f"linear {e['linear']:.2%}, kNN {e['knn']:.2%}"),
             ("data", r["data"])]
    width = max(len(k) for k, _ in rows)
    return "\n".join([f"| {'check':{width}} | result |", f"|{'-' * (width + 2)}|--------|"]
                     + [f"| {k:{width}} | {v} |" for k, v in rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true",
                   help="sizes a CPU runs in seconds (a narrow backbone, tiny batches)")
    p.add_argument("--no_tests", action="store_true", help="leave out the GPU tests")
    p.add_argument("--no_compile", action="store_true", help="leave out the compiled step")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    a = p.parse_args(argv)
    size = SMALL if a.small else FULL
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU: {cpu_kind()}"
    r: dict = {"device": device, "batch": size["batch"], "data": _data()}
    r["tests"] = {"left out": 1} if a.no_tests else run_tests()
    r["step"] = step_rates(size, compiled=not a.no_compile)
    with tempfile.TemporaryDirectory() as folder:
        r["epoch"] = one_epoch(size, folder, r["data"])
    print(table(r), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    return 1 if r["tests"].get("failed") or r["tests"].get("error") or r["tests"].get("errors") else 0


if __name__ == "__main__":
    raise SystemExit(main())
