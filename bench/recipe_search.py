"""Recipe search (not a test): short training runs, each probed on 10,000 train / 10,000 test images.

    python bench/recipe_search.py --pairs 15000 --run 'optimizer=adamw,lr=2e-3,batch_size=64' ...
    python bench/recipe_search.py --throughput --run 'batch_size=64' --run 'batch_size=64,augment.view_size=24'

Each --run is a comma list of TrainConfig fields (dotted for nested ones, e.g. augment.view_size=24,
model.projector=1024-1024-1024). Every run sees the same number of training pairs unless it sets
`pairs=`; results go to stdout as a table and to --out as JSON lines.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vicreg.config import TrainConfig  # noqa: E402
from vicreg.data import even_subset, load_dataset  # noqa: E402
from vicreg.evaluate import extract_features, knn_accuracy, linear_probe  # noqa: E402
from vicreg.runtime import make_runtime  # noqa: E402
from vicreg.train import train  # noqa: E402


def parse_run(spec: str, base: TrainConfig) -> tuple[TrainConfig, int | None]:
    cfg, pairs = TrainConfig.from_dict(base.to_dict()), None
    for item in filter(None, spec.split(",")):
        key, value = item.split("=", 1)
        if key == "pairs":
            pairs = int(float(value))
            continue
        obj, *path = key.split(".")
        target = cfg if not path else getattr(cfg, obj)
        field = path[0] if path else obj
        kind = type(getattr(target, field)) if getattr(target, field) is not None else float
        setattr(target, field, value if kind is str else kind(float(value)) if kind in (int, float) else value)
    return cfg, pairs


def probe(backbone, data, rt, aug, n: int) -> dict:
    tr, _ = even_subset(data.train, n)
    te, _ = even_subset(data.test, n)
    ftr = extract_features(backbone, tr.images, rt, aug)
    fte = extract_features(backbone, te.images, rt, aug)
    res = linear_probe(ftr, tr.labels, fte, te.labels, len(data.classes))
    return {"linear": res.top1, "linear_train": res.train_top1, "knn": knn_accuracy(ftr, tr.labels, fte, te.labels, 10)}


def throughput(cfg: TrainConfig, data, steps: int = 0) -> float:
    """Training pairs/s of one config's step (augmentation + forward + backward + update) on random
    batches, after 3 warm-up steps; no logging, no checkpoints."""
    import torch

    from vicreg.augment import two_views
    from vicreg.model import VICReg
    from vicreg.optim import make_optimizer

    rt = make_runtime(cfg.device, cfg.precision, cfg.channels_last, cfg.threads)
    model = VICReg(cfg.model).to(rt.device)
    model = model.to(memory_format=torch.channels_last) if rt.channels_last else model
    opt = make_optimizer(model, cfg)
    g = torch.Generator().manual_seed(0)
    bs = cfg.batch_size

    def step() -> None:
        idx = torch.randint(0, len(data.train), (bs,), generator=g)
        a, b = two_views(data.train.images[idx], cfg.augment, g)
        with rt.autocast():
            terms, _, _ = model(rt.prepare(a), rt.prepare(b))
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True)
    ap.add_argument("--pairs", type=int, default=15000)
    ap.add_argument("--probe_n", type=int, default=10000)
    ap.add_argument("--data", default=os.environ.get("VICREG_DATA", "data"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="runs/recipe_search.jsonl")
    ap.add_argument("--throughput", action="store_true", help="only time each run's training step (pairs/s)")
    args = ap.parse_args()
    data = load_dataset(args.data)
    if args.throughput:
        base = TrainConfig(threads=args.threads)
        rates = {spec: throughput(parse_run(spec, base)[0], data) for spec in args.run}
        for spec, rate in rates.items():  # ratios within one run: the machine is shared and noisy
            print(f"{spec:60s} {rate:7.1f} pairs/s  {rate / next(iter(rates.values())):5.2f}x the first")
        return
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    base = TrainConfig(data=args.data, checkpoint_dir="runs/search", knn_test=0, threads=args.threads, epochs=1)
    for spec in args.run:
        cfg, pairs = parse_run(spec, base)
        cfg.train_subset = pairs or args.pairs
        cfg.name = "search"
        t0 = time.perf_counter()
        last = None
        model_holder = {}
        for ev in train(cfg, data=data):
            last = ev
            if ev.kind == "step":
                model_holder["ev"] = ev
        secs = time.perf_counter() - t0
        if last.status != "finished":
            print(f"{spec}: {last.status} {last.reason}", flush=True)
            continue
        from vicreg.embed import load_model

        rt = make_runtime("auto", "auto", True, args.threads)
        model, mcfg, _ = load_model(last.checkpoint, rt)
        res = probe(model.backbone, data, rt, mcfg.augment, args.probe_n)
        step = model_holder.get("ev")
        row = {"run": spec, "pairs": cfg.train_subset * cfg.epochs, "train_s": round(secs, 1), **res,
               "emb_std": step.emb_std if step else None, "eff_rank": step.eff_rank if step else None}
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
