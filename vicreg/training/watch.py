"""The learning monitor a visitor watches: Explore's class guess, measured on the run's own model while it trains.

A fixed, class-balanced set of the test split's images (`TrainConfig.watch_images`) is embedded with the
backbone as Explore embeds an upload (32 px, eval-mode BatchNorm folded into the convolutions), and each
image is guessed from the other images of the set with Explore's rule (vicreg.training.evaluate.GUESS_K nearest,
weights exp(sim / GUESS_T)), so the figure is Explore's answer for each of them. It is measured once
before the first step (the untrained start, on the chart as the baseline), then every `watch_every`
seconds of training and after the last step. Its cost is a forward pass over the set; however slow the
CPU, the points are spaced at least nine times the last measurement's time apart, so the monitor never
takes more than a tenth of the training time (docs/recipes.md has the measurement).

The same features go out with the event (never into the metrics file), so the app can draw the set as a
map that moves as the classes separate (services/features/live_map.py) without embedding anything twice.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from torch import nn

from ..core.config import AugmentConfig
from ..core.runtime import Runtime
from .data import Split, even_subset
from .evaluate import extract_features, leave_one_out_guess


@dataclass
class Measure:
    guess: float
    features: np.ndarray  # (N, D) float16: the map's input, a quarter of float32's size to pass around
    seconds: float


SHARE = 0.1  # the most of the run's time the monitor may take


class Watch:
    """The monitor's images and clock. `due` counts training seconds only (the monitor's own time is left
    out): `every` seconds apart, or more where a measurement is slow, so that it keeps to SHARE."""

    def __init__(self, test: Split, images: int, every: float, aug: AugmentConfig):
        self.split, self.indices = even_subset(test, images)
        self.every, self.aug = every, aug
        self.labels = self.split.labels.numpy().astype(np.int64)
        self.spent = 0.0  # seconds spent measuring
        self.step = -1  # the step last measured
        self.cost = 0.0  # seconds the last measurement took
        self.last = time.perf_counter()

    def due(self) -> bool:
        gap = max(self.every, self.cost * (1 - SHARE) / SHARE)
        return self.every > 0 and time.perf_counter() - self.last >= gap

    def measure(self, backbone: nn.Module, rt: Runtime, num_classes: int) -> Measure:
        t0 = time.perf_counter()
        feats = extract_features(backbone, self.split.images, rt, self.aug, batch_size=256)
        guess = leave_one_out_guess(feats, self.split.labels, num_classes)
        seconds = time.perf_counter() - t0
        self.spent, self.cost = self.spent + seconds, seconds
        self.last = time.perf_counter()  # the next interval starts after this measurement
        return Measure(guess, feats.half().numpy(), seconds)
