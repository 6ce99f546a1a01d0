"""A training job's speed while a feature bank is built beside it (a measurement, not a test).

    python -m bench.bank_beside_training [--threads 1] [--window 30] [--data PATH]   # from the repository root

In one process, as in the app: a training job (the Quick demo's recipe on the embedded sample, in the
job's thread, `--threads` torch threads) and the Studio's bank builder. Pairs/s are measured over
windows of `--window` seconds: before, while the default model's feature bank and map of the full
dataset at `--data` are built from a cold cache (the dataset decoded on a low-priority thread of this
process, the forward passes and the UMAP fit in low-priority child processes: services/features/banks.py), and
after the build, if it ends while the job trains.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

from services.features.banks import BANK, MAP
from services.settings import DEFAULT_CHECKPOINT, ROOT, SAMPLE, Settings
from services.studio import Studio
from vicreg.core.config import TrainConfig
from vicreg.orchestration.jobs import TrainingJob


def position(job: TrainingJob) -> tuple[int, float]:
    last = job.snapshot().last
    return (last.step, last.elapsed) if last else (0, 0.0)


def window(job: TrainingJob, seconds: float, batch: int, until=lambda: False) -> tuple[float, float]:
    """(pairs/s, seconds measured) over `seconds`, or until `until()` holds."""
    s0, e0 = position(job)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds and not until():
        time.sleep(0.5)
    s1, e1 = position(job)
    return (s1 - s0) * batch / max(e1 - e0, 1e-9), e1 - e0


def stages(studio: Studio) -> str:
    b, m = studio.maps.stage(BANK, DEFAULT_CHECKPOINT), studio.maps.stage(MAP, DEFAULT_CHECKPOINT)
    return " · ".join(f"{s.kind} {s.state} {100 * s.fraction:.0f}%" for s in (b, m) if s is not None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="the training job's torch threads")
    ap.add_argument("--window", type=float, default=30.0, help="seconds per measurement")
    ap.add_argument("--data", default=os.environ.get("VICREG_DATA") or os.path.join(ROOT, "..", "shared", "data",
                                                                                     "cifar10"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="vicreg-bank-bench-")
    studio = Studio(Settings(data_root=args.data, cache_dir=os.path.join(work, "cache"),
                             checkpoint_dir=os.path.join(work, "checkpoints")))
    cfg = TrainConfig.from_preset("quick_demo").with_values({
        "epochs": 200, "knn_test": 0, "threads": args.threads, "data": SAMPLE, "name": "bench",
        "checkpoint_dir": os.path.join(work, "checkpoints")})
    job = TrainingJob(data_loader=studio.training_data)
    print(f"cpus {os.cpu_count()}  training threads {args.threads}  bank threads {studio.threads}  "
          f"load avg {os.getloadavg()[0]:.2f}")
    job.start(cfg)
    while position(job)[0] < 10:
        time.sleep(0.5)
    before, _ = window(job, args.window, cfg.batch_size)
    print(f"before:             {before:7.1f} pairs/s")
    t0 = time.perf_counter()
    studio.maps.select(DEFAULT_CHECKPOINT)
    mapped = studio.maps.stage(MAP, DEFAULT_CHECKPOINT)
    during = []
    for k in range(2):
        rate, secs = window(job, args.window, cfg.batch_size, lambda: mapped.done)
        during.append(rate)
        print(f"during build, #{k + 1}: {rate:7.1f} pairs/s over {secs:.0f}s  ({stages(studio)})")
    left = 900 - (time.perf_counter() - t0)
    while not mapped.done and left > 0:
        time.sleep(1)
        left -= 1
    built = time.perf_counter() - t0
    after, _ = window(job, args.window, cfg.batch_size) if mapped.done else (float("nan"), 0)
    job.stop()
    while job.snapshot().active:  # let its thread end before the process does
        time.sleep(0.5)
    print(f"bank and map built in {built:.0f}s ({stages(studio)})" if mapped.done else
          f"bank and map not built within 900s ({stages(studio)})")
    print(f"after:              {after:7.1f} pairs/s")
    base = before if after != after else (before + after) / 2
    print(f"\nduring / before-and-after: {min(during) / base:.2f} (the worse window); target >= 0.80")


if __name__ == "__main__":
    main()
