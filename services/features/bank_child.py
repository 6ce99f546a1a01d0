"""The backbone features of many images under one checkpoint, in a child process at the lowest
priority (services/features/children.py says why):

    python -m services.features.bank_child CHECKPOINT IMAGES.npy OUT.npy THREADS DEVICE PRECISION

IMAGES.npy holds (N, 3, 32, 32) uint8; OUT.npy gets the (N, D) float32 L2-normalised features. Plain
.npy both ways (no pickle). Progress goes to stdout as `progress <fraction> <text>` lines.
"""
from __future__ import annotations

import sys

import numpy as np

from services.features.children import lower_priority, report, watch_parent
from vicreg.runfiles.files import atomic_write


def main(argv: list[str]) -> int:
    if len(argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    lower_priority()  # before torch starts its threads: they inherit it
    watch_parent()
    checkpoint, images, out, threads, device, precision = argv
    import torch

    from services.features.models import ModelCache

    report(0.0, "loading the model")
    x = torch.from_numpy(np.load(images, allow_pickle=False))
    feats = ModelCache(device, precision, int(threads)).features(checkpoint, x, report)
    atomic_write(out, lambda tmp: np.save(tmp, feats.astype(np.float32)), fsync=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
