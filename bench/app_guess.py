"""How often the app's kNN class guess is right (not a test): every training image of the embedded
CIFAR-10 sample uploaded through the Explore tab's handler, as a fresh clone runs it offline (no
dataset, so the sample's 6,000 test images are the neighbour bank; none of the uploads is in it).

    python -m bench.app_guess [--checkpoint checkpoints/<default>.safetensors] [--limit N]

Prints the share of right guesses, overall and per class.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time

import numpy as np
from PIL import Image

from bench.harness import demo_files
from services.settings import Settings
from services.studio import Studio
from ui.explore_handlers import ExploreHandlers
from vicreg.training.data import even_indices, read_packed


def upload_all(checkpoint: str, sample: str, limit: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(true labels, guessed labels, class names) for the sample's training images (`limit` of them; 0: all), one
    upload each."""
    z = read_packed(sample)
    images, labels, classes = z["train_x"], z["train_y"], json.loads(str(z["classes"]))
    if limit:  # evenly spaced: the sample is sorted by class
        keep = even_indices(len(labels), limit).numpy()
        images, labels = images[keep], labels[keep]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_root=os.path.join(tmp, "no-data"), sample=sample, default_checkpoint=checkpoint,
                            checkpoint_dir=os.path.join(tmp, "checkpoints"), cache_dir=os.path.join(tmp, "cache"))
        h = ExploreHandlers(Studio(settings))
        guesses, t0 = [], time.perf_counter()
        for i, chw in enumerate(images):
            path = os.path.join(tmp, f"train-{i}.png")
            buf = io.BytesIO()
            Image.fromarray(chw.transpose(1, 2, 0)).save(buf, "PNG")
            with open(path, "wb") as f:
                f.write(buf.getvalue())
            info = h.upload(path, checkpoint).info
            if not info or info.get("prediction") is None:
                raise SystemExit(f"upload {i} gave no guess")
            guesses.append(classes.index(info["prediction"]))
            if (i + 1) % 200 == 0:
                print(f"{i + 1} uploads, {time.perf_counter() - t0:.0f} s", flush=True)
    return np.asarray(labels), np.asarray(guesses), classes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shipped, sample = demo_files(os.environ.get("VICREG_DATA"))
    ap.add_argument("--checkpoint", default=shipped)
    ap.add_argument("--sample", default=sample)
    ap.add_argument("--limit", type=int, default=0, help="only N evenly spaced training images (0: all)")
    args = ap.parse_args()
    true, guess, classes = upload_all(args.checkpoint, args.sample, args.limit)
    right = true == guess
    print(f"{os.path.basename(args.checkpoint)}: the guess is right for {right.sum()} of {len(true)} "
          f"embedded training images ({100 * right.mean():.2f} %)")
    print(", ".join(f"{c} {100 * right[true == k].mean():.0f} %" for k, c in enumerate(classes)))


if __name__ == "__main__":
    main()
