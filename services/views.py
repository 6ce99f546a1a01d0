"""Two augmented views of one image, with the parameters that made each (for display).

`vicreg.augment.two_views` is the training pair of a batch; `view_pair` shows one image's pair.
"""
from __future__ import annotations

import numpy as np
import torch

from vicreg.augment import augment
from vicreg.config import AugmentConfig


def view_pair(pixels: np.ndarray, aug: AugmentConfig, seed: int) -> tuple[list[np.ndarray], list[dict]]:
    """Two augmented views (HWC uint8) of one (3, S, S) uint8 image and the parameters of each."""
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(pixels)).unsqueeze(0).expand(2, -1, -1, -1)
    views, params = augment(x, aug, g)
    imgs = [(v.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8) for v in views]
    return imgs, [params.describe(i) for i in range(2)]
