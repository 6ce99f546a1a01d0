"""What a visitor's run learns (not a test): train on the embedded CIFAR-10 sample, as a Space with no
dataset does, and score the backbone with the app's own guess rule before and after.

    python -m bench.visitor_run                                  # the Quick demo and the 10-minute preset
    python -m bench.visitor_run --run 'preset=quick_demo' --run 'preset=quick_demo,augment.views=4'
    python -m bench.visitor_run --cost --run 'preset=quick_demo'  # the monitor's and map's cost
    python -m bench.visitor_run --precise-bn-ab --run 'preset=quick_demo'  # re-estimated BatchNorm statistics or not

With --cost, each run trains twice in one sitting, with the monitor and the live map (drawn in its child
process as the app draws it) and with both off, and prints the training images/s of each: wall-clock images
over the whole run, so every second the monitor and the map take from training counts.

The guess rule is Explore's (services/features/neighbours.py): each of the sample's training images is a query, its
20 nearest of the sample's test images vote with weights exp(sim / 0.1). The untrained figure is the same
run's initial weights, scored in the same process. Each --run is a comma list of TrainConfig fields as
bench/recipe_search.py reads them (`preset=NAME` first). Prints one JSON line per run and a table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np
import torch

from bench.harness import demo_files
from bench.recipe_search import parse_run
from services.features.live_map import LiveMap
from services.features.neighbours import FeatureIndex, l2_normalize
from vicreg.core.config import TrainConfig
from vicreg.core.model import VICReg
from vicreg.core.presets import LONG_DEMO, QUICK
from vicreg.core.runtime import cpu_kind, make_runtime
from vicreg.runfiles.names import metrics_path
from vicreg.training.data import Dataset, even_subset, load_dataset
from vicreg.training.embed import load_model
from vicreg.training.evaluate import extract_features
from vicreg.training.precise_bn import recalibrate_bn
from vicreg.training.train import train


def app_guess(backbone: torch.nn.Module, data: Dataset, rt, queries: int = 0, bank: int = 0) -> float:
    """The share of the sample's training images (the first `queries` of each class evenly; 0: all) whose
    Explore guess is right, with the sample's test images (`bank`; 0: all) as the neighbour bank."""
    q, _ = even_subset(data.train, queries or None)
    b, b_idx = even_subset(data.test, bank or None)
    index = FeatureIndex("bench", l2_normalize(extract_features(backbone, b.images, rt).numpy()),
                         b.labels.numpy(), np.asarray(b_idx), list(data.classes))
    feats = extract_features(backbone, q.images, rt).numpy()
    right = [max(r.guess, key=r.guess.get) == data.classes[int(y)]
             for r, y in ((index.query(f), y) for f, y in zip(feats, q.labels, strict=True))]
    return float(np.mean(right))


def untrained(cfg: TrainConfig, rt) -> torch.nn.Module:
    """The run's first weights: the engine seeds with cfg.seed before it builds the model."""
    torch.manual_seed(cfg.seed)
    model = VICReg(cfg.model).to(rt.device)
    return model.to(memory_format=torch.channels_last) if rt.channels_last else model


def train_rate(cfg: TrainConfig, data: Dataset, live: LiveMap | None) -> tuple[float, int, float]:
    """(images/s over the run's wall time, monitor points, seconds the monitor took), the map drawn by `live`."""
    t0, points, spent, last = time.perf_counter(), 0, 0.0, None
    for ev in train(cfg, data=data):
        last = ev
        if ev.kind == "watch" and ev.guess is not None:
            points, spent = points + 1, spent + ev.seconds
            if live is not None:
                live.offer(1, ev)
    wall = time.perf_counter() - t0
    images = last.step * cfg.batch_size
    return images / wall, points, spent


def cost(spec: str, cfg: TrainConfig, data: Dataset, folder: str) -> dict:
    live = LiveMap(os.path.join(folder, "map"))
    with_rate, points, spent = train_rate(cfg.with_values({"name": "with"}), data, live)
    drawn = live.latest(1)
    without, _, _ = train_rate(cfg.with_values({"name": "without", "watch_images": 0}), data, None)
    return {"run": spec, "images_per_s_with": round(with_rate, 2), "images_per_s_without": round(without, 2),
            "cost": round(1 - with_rate / without, 3), "points": points, "monitor_s": round(spent, 1),
            "maps": drawn.count if drawn else 0, "cpu": cpu_kind()}


def run_one(spec: str, cfg: TrainConfig, data: Dataset, queries: int, bank: int, keep: str | None = None,
            bn_ab: bool = False) -> dict:
    rt = make_runtime("auto", "auto", True, cfg.threads)
    before = app_guess(untrained(cfg, rt).backbone, data, rt, queries, bank)
    t0, last, watched = time.perf_counter(), None, []
    for ev in train(cfg.with_values({"precise_bn": 0}) if bn_ab else cfg, data=data):
        last = ev
        if ev.kind == "watch" and ev.guess is not None:
            watched.append(round(100 * ev.guess, 1))
    wall = time.perf_counter() - t0
    if last is None or last.status not in ("finished", "stopped"):
        raise SystemExit(f"{spec}: {getattr(last, 'reason', 'no events')}")
    model, _, _ = load_model(last.checkpoint, rt)
    after = app_guess(model.backbone, data, rt, queries, bank)
    extra = {}
    if bn_ab:  # the same trained weights, their statistics then re-estimated as the engine does at a run's end
        images, n = even_subset(data.train, cfg.train_subset)[0].images, cfg.precise_bn or 5000
        recalibrate_bn(model.backbone, images, rt, cfg.augment, n)
        extra = {"after_training_statistics": round(100 * after, 2), "precise_bn_images": min(n, images.shape[0])}
        after = app_guess(model.backbone, data, rt, queries, bank)
    if keep:
        os.makedirs(keep, exist_ok=True)
        preset = spec.split(",")[0].removeprefix("preset=")  # the run's preset: its reference's file name
        shutil.copyfile(metrics_path(cfg.checkpoint_dir, cfg.name), os.path.join(keep, f"{preset}.metrics.jsonl"))
    return {"run": spec, "wall_s": round(wall, 1), "steps": last.step, "untrained": round(100 * before, 2),
            "after": round(100 * after, 2), **extra, "monitor": watched, "cpu": cpu_kind()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", help=f"default: preset={QUICK} and preset={LONG_DEMO}")
    ap.add_argument("--queries", type=int, default=0, help="score only N training images (0: all)")
    ap.add_argument("--bank", type=int, default=0, help="only N test images as the bank (0: all)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--cost", action="store_true", help="images/s with the monitor and map, and without")
    ap.add_argument("--out", default="runs/visitor_run.jsonl")
    ap.add_argument("--precise-bn-ab", action="store_true", help="train without re-estimating BatchNorm statistics, "
                    "score, then re-estimate them (on the run's precise_bn images, else 5,000) and score again")
    ap.add_argument("--keep", default=None, help="copy each run's metrics file into this folder as "
                    "<preset>.metrics.jsonl (assets/reference/ holds the ones the Train tab draws in grey)")
    args = ap.parse_args()
    _, sample = demo_files(None)
    data = load_dataset(sample)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = TrainConfig(data=sample, checkpoint_dir=tmp, threads=args.threads, name="visitor")
        for i, spec in enumerate(args.run or [f"preset={QUICK}", f"preset={LONG_DEMO}"]):
            # a name of its own per run: runs of one name append to one metrics file (--keep copies it)
            cfg, _ = parse_run(spec, base.with_values({"name": f"visitor{i}"}), keep_schedule=True)
            row = (cost(spec, cfg, data, tmp) if args.cost
                   else run_one(spec, cfg, data, args.queries, args.bank, args.keep, args.precise_bn_ab))
            rows.append(row)
            print(json.dumps(row), flush=True)
            os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    if args.cost:
        return
    print("| run | wall s | steps | untrained | after |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['run']}` | {r['wall_s']} | {r['steps']} | {r['untrained']:.2f} % | {r['after']:.2f} % |")


if __name__ == "__main__":
    main()
