"""Release step for the shipped default model (not a test): pack a trained checkpoint for the demo
and build the embedded CIFAR-10 sample the app uses when no dataset is present.

    python scripts/build_default.py --checkpoint checkpoints/cpu120.safetensors \\
        --report runs/cpu120_eval.json --baseline runs/random_eval.json \\
        --command "python -m vicreg TRAIN --preset cpu120" --commit <sha> --hardware "..." \\
        --out checkpoints/cpu120.safetensors --sample assets/cifar10_sample.npz

- the checkpoint is packed (backbone only, fp16, metadata kept; `vicreg.runfiles.checkpoint.pack_checkpoint`)
  with its provenance and its EVALUATE reports (`python -m vicreg EVALUATE ... --output report.json`)
- the sample holds 200 train and 600 test images per class (the first of each class), the packed
  model's L2-normalised features of the test images (fp16) and their 2-D UMAP coordinates. The
  features are computed with the packed weights, so they match what the app computes for uploads.
  The test images are the app's neighbour bank when no dataset is present: the more of them, the
  better its kNN guess. Images are stored as their files (`vicreg.training.data.encode_images`), which is
  what lets 6,000 of them fit beside the model in the 40 MB the app ships.

`--sample_only` rebuilds the sample from the packed model already at `--out`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import time

import numpy as np

from vicreg.core.runtime import make_runtime
from vicreg.runfiles.checkpoint import load_checkpoint, pack_checkpoint
from vicreg.runfiles.files import atomic_write, file_sha256
from vicreg.runfiles.metrics import read_metrics
from vicreg.training.data import encode_images, list_split, load_dataset
from vicreg.training.embed import load_model
from vicreg.training.evaluate import extract_features


def first_per_class(labels: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([np.nonzero(labels == c)[0][:n] for c in range(int(labels.max()) + 1)])


def umap_coords(features: np.ndarray) -> np.ndarray:
    try:
        from services.features.umap_fit import fit
    except ImportError:  # before the app's services moved out of the engine
        from vicreg.umap_fit import fit  # type: ignore[no-redef]
    return fit(features)


def provenance(args, ckpt) -> dict:
    meta = ckpt.meta
    cfg = meta["config"]
    spe = wall = None
    metrics = os.path.splitext(args.checkpoint)[0] + ".metrics.jsonl"
    if os.path.exists(metrics):
        rows = read_metrics(metrics)  # a killed run's torn last line is skipped
        # each start (a fresh run or a resume) opens a segment; a segment's last `elapsed` is its training
        # time, also for one stopped without an end row: step rows carry `elapsed` too, so steps trained after
        # the last save and lost to a kill count as spent (they are trained again; the history says which)
        segments: list[float] = []
        for r in rows:
            if r.get("kind") == "start":
                segments.append(0.0)
                spe = spe or r["steps_per_epoch"]
            elif segments and "elapsed" in r:
                segments[-1] = max(segments[-1], r["elapsed"])
        wall = round(sum(segments), 1) if segments else None
    history = open(args.history).read().splitlines() if args.history else []
    return {
        "command": args.command, "commit": args.commit, "hardware": args.hardware, "history": history,
        "data": args.data_note, "epochs": meta["epoch"], "steps": meta["step"],
        # a step takes `batch_size` images, each seen as `views` augmented views (2: a pair)
        "images_seen": meta["step"] * cfg["batch_size"],
        "views_seen": meta["step"] * cfg["batch_size"] * cfg.get("augment", {}).get("views", 2),
        "steps_per_epoch": spe, "wall_seconds": wall,
        "trained_at": datetime.datetime.fromtimestamp(meta.get("saved_at", time.time()),
                                                      datetime.timezone.utc).isoformat(),
    }


def source_files(data: str, split: str, rows: np.ndarray) -> list[bytes | None] | None:
    """The image files behind `rows` of an image-folder dataset's split (None for other datasets)."""
    folder = os.path.join(data, split)
    if not os.path.isdir(folder):
        return None
    paths = list_split(folder)[0]
    out = []
    for r in rows:
        with open(paths[r], "rb") as f:
            out.append(f.read())
    return out


def build_sample(args) -> None:
    data = load_dataset(args.data)
    te = first_per_class(data.test.labels.numpy(), args.test_per_class)
    tr = first_per_class(data.train.labels.numpy(), args.train_per_class)
    rt = make_runtime("cpu", "auto")
    model, _, _ = load_model(args.out, rt)
    feats = extract_features(model.backbone, data.test.images[te], rt).numpy()
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    t0 = time.perf_counter()
    coords = umap_coords(feats).astype(np.float32)
    print(f"UMAP of {len(te)} points in {time.perf_counter() - t0:.1f}s")
    arrays = dict(
        train_y=data.train.labels[tr].numpy(), train_index=tr.astype(np.int64),
        test_y=data.test.labels[te].numpy(), test_index=te.astype(np.int64),
        classes=np.asarray(json.dumps(list(data.classes))), features=feats.astype(np.float16), umap=coords,
        features_checkpoint=np.asarray(file_sha256(args.out)),
    )
    for name, split, rows in (("train_x", data.train, tr), ("test_x", data.test, te)):
        enc = encode_images(split.images[rows].numpy(), source_files(args.data, name[:-2], rows))
        arrays.update({f"{name}_{k}": v for k, v in enc.items()})
    atomic_write(args.sample, lambda tmp: np.savez_compressed(tmp, **arrays))
    print(f"sample -> {args.sample} ({os.path.getsize(args.sample) / 2**20:.1f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample_only", action="store_true", help="only rebuild the sample, from the model at --out")
    ap.add_argument("--checkpoint")
    ap.add_argument("--report", help="EVALUATE --output JSON of the checkpoint")
    ap.add_argument("--baseline", help="EVALUATE --random_init --output JSON")
    ap.add_argument("--command")
    ap.add_argument("--commit")
    ap.add_argument("--hardware")
    ap.add_argument("--data_note", default="CIFAR-10 train split (50,000 images, JPEG q75 copy)")
    ap.add_argument("--history", default=None, help="a text file of how the run went (stops, resumes), one line each")
    ap.add_argument("--data", default=os.environ.get("VICREG_DATA", "data"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--sample", required=True)
    ap.add_argument("--train_per_class", type=int, default=200)
    ap.add_argument("--test_per_class", type=int, default=600)
    args = ap.parse_args()
    if not args.sample_only:
        missing = [f"--{k}" for k in ("checkpoint", "report", "baseline", "command", "commit", "hardware")
                   if getattr(args, k) is None]
        if missing:
            ap.error(f"packing a model needs {', '.join(missing)} (or --sample_only)")
        ckpt = load_checkpoint(args.checkpoint)
        with open(args.report) as f:
            report = json.load(f)
        with open(args.baseline) as f:
            report["baseline"] = json.load(f)
        pack_checkpoint(ckpt, args.out, {"provenance": provenance(args, ckpt), "report": report})
        print(f"packed {args.checkpoint} -> {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB)")
    build_sample(args)


if __name__ == "__main__":
    main()
