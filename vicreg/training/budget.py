"""Runs sized by time (`TrainConfig.budget_s`): a visitor's demo ends, learning-rate decay and all, within its
minutes on whatever CPU it lands on. The same CPUs differ several-fold in speed (AMX, AVX-512-BF16, or
neither), so a recipe fixed in epochs that takes 2 minutes on one takes 10 on another.

A fresh run with a budget times a few real training steps on throwaway state (a copy of the optimiser and
its own augmentation stream), puts the model's weights and BatchNorm statistics back exactly as they were,
and sets its epochs to what fits: `epochs` is then fixed in the run's config (and in its checkpoints), so
the schedule stays a pure function of the step and resuming stays exact. Under torchrun the budget is not
used (every rank would have to agree on it); the preset's epochs stand.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable

import torch

# After WARM_STEPS untimed ones (oneDNN and the allocator warm up in the first). The median of 10: on a shared host a
# second of slowdown during 5 timed steps once made the Quick demo fit 23 epochs (89 s) where other runs fitted 27-35.
TIMED_STEPS = 10
WARM_STEPS = 2


def seconds_per_step(model: torch.nn.Module, step: Callable[[int], None]) -> float:
    """The median time of `step(i)` over TIMED_STEPS steps after WARM_STEPS warm-ups, with `model`'s state put back."""
    state = copy.deepcopy(model.state_dict())
    times = []
    try:
        for i in range(WARM_STEPS + TIMED_STEPS):
            t0 = time.perf_counter()
            step(i)
            times.append(time.perf_counter() - t0)
    finally:
        model.load_state_dict(state)
    timed = sorted(times[WARM_STEPS:])
    return timed[len(timed) // 2]


def fitted_epochs(budget_s: float, step_s: float, steps_per_epoch: int, share: float = 0.0) -> int:
    """The most whole epochs that fit the budget (at least one), with `share` of the time on top for the learning
    monitor: a demo that says 2 minutes ends within them, not up to half an epoch after (rounding would)."""
    epoch_s = max(step_s * steps_per_epoch * (1 + share), 1e-9)
    return max(1, math.floor(budget_s / epoch_s + 1e-9))
