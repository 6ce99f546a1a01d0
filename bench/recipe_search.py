"""Recipe search (not a test): short training runs, each probed on 10,000 train / 10,000 test images.

    python bench/recipe_search.py --pairs 15000 --run 'optimizer=adamw,lr=2e-3,batch_size=64' ...
    python bench/recipe_search.py --throughput --run 'batch_size=64' --run 'batch_size=64,augment.view_size=24'
    python bench/recipe_search.py --budget_s 900 --run 'preset=cpu90' \\
        --run 'preset=cpu90,augment.views=6,augment.view_size=16,augment.scale=0.2:0.6'

Each --run is a comma list of TrainConfig fields (dotted for nested ones, e.g. augment.view_size=24,
model.projector=1024-1024-1024; a pair of numbers as lo:hi, e.g. augment.scale=0.2:0.6), optionally
starting from a preset (`preset=cpu90`: its recipe, then the search's own run settings, one epoch over
the images given, then the run's fields). augment.views=N trains on N views of each image (multi-view
VICReg). Every run sees the same number of training images (--pairs) unless it sets `pairs=` (or
`images=`), or --budget_s gives each run the images its measured step rate trains in that many
seconds: an equal-compute comparison, since a step of N views costs more than a step of two.
Results go to stdout as JSON lines and a table at the end, and to --out as JSON lines.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

from vicreg.core.config import TrainConfig
from vicreg.core.presets import PRESETS
from vicreg.core.runtime import make_runtime
from vicreg.training.data import Dataset, even_subset, load_dataset
from vicreg.training.embed import load_model
from vicreg.training.evaluate import extract_features, knn_accuracy, linear_probe
from vicreg.training.train import train

COLUMNS = ("run", "views", "view_px", "images", "views_seen", "train_min", "linear", "knn", "eff_rank")


def _value(cfg: TrainConfig, key: str, value: str):
    """A field's value from its text: yes/no for a switch; with_values converts the rest (`lo:hi` pairs too)."""
    if isinstance(cfg.get(key), bool):
        return value.lower() in ("1", "true", "yes")
    return value


def parse_run(spec: str, base: TrainConfig, keep_schedule: bool = False) -> tuple[TrainConfig, int | None]:
    """A run's config and its own number of training images (None: the search's). `keep_schedule`: a preset
    keeps its own epochs, images and monitor (bench/visitor_run.py trains presets as they are)."""
    items = [item.split("=", 1) for item in filter(None, spec.split(","))]
    if any(len(item) != 2 for item in items):
        raise SystemExit(f"--run {spec!r}: every item must be field=value")
    cfg, images = base, None
    if items and items[0][0] == "preset":
        name = items.pop(0)[1]
        if name not in PRESETS:
            raise SystemExit(f"--run {spec!r}: unknown preset {name!r} (one of {', '.join(PRESETS)})")
        run_fields = ("data", "checkpoint_dir", "threads", "name") + (
            () if keep_schedule else ("knn_test", "epochs", "train_subset"))
        cfg = TrainConfig.from_preset(name).with_values({k: getattr(base, k) for k in run_fields})
    for key, value in items:
        if key in ("pairs", "images"):
            images = int(float(value))
        else:
            cfg = cfg.with_values({key: _value(cfg, key, value)})
    return cfg.validate(), images


def probe(backbone, data, rt, aug, n: int) -> dict:
    tr, _ = even_subset(data.train, n)
    te, _ = even_subset(data.test, n)
    ftr = extract_features(backbone, tr.images, rt, aug)
    fte = extract_features(backbone, te.images, rt, aug)
    res = linear_probe(ftr, tr.labels, fte, te.labels, len(data.classes))
    return {"linear": res.top1, "linear_train": res.train_top1, "knn": knn_accuracy(ftr, tr.labels, fte, te.labels, 10)}


def throughput(cfg: TrainConfig, data: Dataset, steps: int = 0) -> float:
    """Training images/s of one config's step (augmentation of all its views + forward + backward +
    update) on random batches, after 3 warm-up steps; no logging, no checkpoints. With progressive
    resizing, the rate over the whole run: each view side's rate, over its equal part of the run."""
    if sides := cfg.augment.view_sides():
        rates = [_rate(cfg, data, steps, side) for side in sides]
        return len(rates) / sum(1 / r for r in rates)
    return _rate(cfg, data, steps, cfg.augment.view_side())


def _rate(cfg: TrainConfig, data: Dataset, steps: int, side: int) -> float:
    import torch

    from vicreg.core.augment import n_views
    from vicreg.core.model import VICReg
    from vicreg.core.optim import make_optimizer

    rt = make_runtime(cfg.device, cfg.precision, cfg.channels_last, cfg.threads)
    model = VICReg(cfg.model).to(rt.device)
    model = model.to(memory_format=torch.channels_last) if rt.channels_last else model
    opt = make_optimizer(model, cfg)
    g = torch.Generator().manual_seed(0)
    bs = cfg.batch_size

    def step() -> None:
        idx = torch.randint(0, len(data.train), (bs,), generator=g)
        views = n_views(data.train.images[idx], cfg.augment, g, size=side)
        with rt.autocast():
            terms, *_ = model(*map(rt.prepare, views))
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        opt.step()

    for _ in range(3):
        step()
    n = steps or max(6, 1200 // bs)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n * bs / (time.perf_counter() - t0)


def plan(cfg: TrainConfig, images: int, n_train: int) -> TrainConfig:
    """`images` training images as whole passes over at most the training split (cosine over the run)."""
    epochs = max(1, math.ceil(images / n_train))
    return cfg.with_values({"epochs": epochs, "train_subset": max(cfg.batch_size, round(images / epochs))})


def run_one(spec: str, cfg: TrainConfig, data: Dataset, probe_n: int, threads: int) -> dict | None:
    """Train one candidate, probe its backbone; its table row (None when the run failed)."""
    t0 = time.perf_counter()
    last, step = None, None
    for ev in train(cfg, data=data):
        last = ev
        step = ev if ev.kind == "step" else step
    secs = time.perf_counter() - t0
    if last is None or last.status != "finished":
        print(f"{spec}: {getattr(last, 'status', 'no events')} {getattr(last, 'reason', '')}", flush=True)
        return None
    rt = make_runtime("auto", "auto", True, threads)
    model, mcfg, _ = load_model(last.checkpoint, rt)
    res = probe(model.backbone, data, rt, mcfg.augment, probe_n)
    seen = (cfg.train_subset // cfg.batch_size) * cfg.batch_size * cfg.epochs
    return {"run": spec, "views": cfg.augment.views, "view_px": cfg.augment.view_sizes or cfg.augment.view_side(),
            "images": seen, "views_seen": seen * cfg.augment.views, "pairs": seen, "train_s": round(secs, 1),
            "train_min": round(secs / 60, 2), **res, "emb_std": step.emb_std if step else None,
            "eff_rank": step.eff_rank if step else None}


def table(rows: list[dict]) -> str:
    """The runs as one markdown table (accuracies in %)."""
    def cell(row: dict, col: str) -> str:
        v = row.get(col)
        if col in ("linear", "knn") and v is not None:
            return f"{100 * v:.2f} %"
        if isinstance(v, float):
            return f"{v:.2f}" if col == "train_min" else f"{v:.1f}"
        return f"`{v}`" if col == "run" else str(v)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(cell(r, c) for c in COLUMNS) + " |" for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True)
    ap.add_argument("--pairs", type=int, default=15000, help="training images per run (each brings its views)")
    ap.add_argument("--budget_s", type=float, default=0,
                    help="instead of --pairs: the images each run's measured step rate trains in this many seconds")
    ap.add_argument("--probe_n", type=int, default=10000)
    ap.add_argument("--data", default=os.environ.get("VICREG_DATA", "data"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="runs/recipe_search.jsonl")
    ap.add_argument("--throughput", action="store_true", help="only time each run's training step (images/s)")
    args = ap.parse_args()
    data = load_dataset(args.data)
    base = TrainConfig(data=args.data, checkpoint_dir="runs/search", knn_test=0, threads=args.threads, epochs=1,
                       name="search")
    runs = [(spec, *parse_run(spec, base)) for spec in args.run]  # every spec checked before any training
    if args.throughput:
        rates = [throughput(cfg, data) for _, cfg, _ in runs]
        first = rates[0]
        for (spec, cfg, _), rate in zip(runs, rates, strict=True):  # ratios within one run: the machine is shared
            print(f"{spec:70s} {rate:7.1f} images/s {rate * cfg.augment.views:8.1f} views/s  {rate / first:5.2f}x "
                  "the first", flush=True)
        return
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    rows = []
    for spec, cfg, images in runs:
        if images is None and args.budget_s > 0:
            images = int(throughput(cfg, data) * args.budget_s)
        row = run_one(spec, plan(cfg, images or args.pairs, len(data.train)), data, args.probe_n, args.threads)
        if row is None:
            continue
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
