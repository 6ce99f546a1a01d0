"""An image's training views, with the parameters that made each (for display).

`vicreg.core.augment.n_views` draws a batch's training views; `training_views` shows one image's, as the checkpoint
drew them: its number of views, at its training view side.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from vicreg.core.augment import augment
from vicreg.core.config import AugmentConfig


def training_views(pixels: np.ndarray, aug: AugmentConfig, seed: int) -> tuple[list[np.ndarray], list[dict]]:
    """All `aug.views` training views (HWC uint8, at the run's last view side, AugmentConfig.view_side: what the
    network saw) of one (3, S, S) uint8 image, and the parameters of each."""
    g = torch.Generator().manual_seed(seed)
    imgs, described = [], []
    for side, same in itertools.groupby(aug.sides(aug.views, aug.view_side())):  # the views of one side together
        n = len(list(same))
        x = torch.from_numpy(np.ascontiguousarray(pixels)).unsqueeze(0).expand(n, -1, -1, -1)
        views, params = augment(x, aug, g, side)
        imgs += [(v.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8) for v in views]
        described += [params.describe(i) for i in range(n)]
    return imgs, described
