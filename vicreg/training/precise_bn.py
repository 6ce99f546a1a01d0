"""The backbone's BatchNorm statistics re-estimated on clean, full-size images when a run finishes.

While it trains, each BatchNorm keeps a running average of its input's mean and variance over the *training
views*: colour-jittered, greyed and solarised crops, and in the CPU recipes 16-px ones. Evaluation, Explore and
the app's guess embed clean 32-px images, whose activations have other statistics, so eval-mode BatchNorm
normalises them with the wrong ones (the train/test discrepancy FixRes (Touvron et al., 2019) describes for
resolution). A finishing run therefore runs its backbone in train mode, without gradients, over
`TrainConfig.precise_bn` clean training images at their stored size, and keeps the plain average of their
batch statistics (Precise BN, Wu & Johnson, 2021). The Quick demo's guess on the sample rose by 1.5 to 2.5
points, longer runs' by a point or nothing, and the shipped cpu120's linear probe fell a quarter of a point
(docs/recipes.md): so it is off by default and on in the visitor demos.

Only the running statistics change. Train-mode BatchNorm normalises with each batch's own statistics and never
reads them, so resuming or continuing such a run trains exactly as before, and a run that stops and resumes
ends with the same statistics as one that never stopped (they are re-estimated from scratch).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.augment import normalize
from ..core.config import AugmentConfig
from ..core.runtime import Runtime
from .data import even_indices


def recalibrate_bn(backbone: nn.Module, images: Tensor, rt: Runtime, aug: AugmentConfig, n: int | None = None,
                   batch_size: int = 250) -> int:
    """Replace every BatchNorm's running statistics in `backbone` with the average over `n` evenly spaced of
    `images` ((N, 3, S, S) uint8, as evaluation embeds them; None: all). Returns the number of BatchNorm layers
    re-estimated."""
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or images.shape[0] < 2:
        return 0
    if n is not None and n < images.shape[0]:
        images = images[even_indices(images.shape[0], n).to(images.device)]
    momenta, was_training = [m.momentum for m in norms], backbone.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an exponential one
    backbone.train()
    try:
        with torch.no_grad():
            for i in range(0, images.shape[0], batch_size):
                x = images[i : i + batch_size].to(rt.device, non_blocking=True)
                with rt.autocast():
                    backbone(rt.prepare(normalize(x.float() / 255.0, aug)))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        backbone.train(was_training)
    return len(norms)
