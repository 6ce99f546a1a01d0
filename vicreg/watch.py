"""The learning monitor a visitor watches: Explore's class guess, measured on the run's own model while it trains.

A fixed, class-balanced set of the test split's images (`TrainConfig.watch_images`) is embedded with the
backbone as Explore embeds an upload (32 px, eval-mode BatchNorm folded into the convolutions), and each
image is guessed from the other images of the set with Explore's rule (vicreg.evaluate.GUESS_K nearest,
weights exp(sim / GUESS_T)), so the figure is Explore's answer for each of them. It is measured once
before the first step (the untrained start, on the chart as the baseline), then every `watch_every`
seconds of training and after the last step. Its cost is a forward pass over the set, about as long as a
training step over as many images at 16 px: the presets size the set and the interval to cost under a
tenth of the training time (docs/recipes.md has the measurement).

The same features go out with the event (never into the metrics file), so the app can draw the set as a
map that moves as the classes separate (services/live_map.py) without embedding anything twice.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from torch import nn

from .config import AugmentConfig
from .data import Split, even_subset
from .evaluate import extract_features, leave_one_out_guess
from .runtime import Runtime


@dataclass
class Measure:
    guess: float
    features: np.ndarray  # (N, D) float16: the map's input, a quarter of float32's size to pass around
    seconds: float


class Watch:
    """The monitor's images and clock. `due` counts training seconds only (the monitor's own time is left
    out), so the points stay `every` seconds of training apart however long each measurement takes."""

    def __init__(self, test: Split, images: int, every: float, aug: AugmentConfig):
        self.split, self.indices = even_subset(test, images)
        self.every, self.aug = every, aug
        self.labels = self.split.labels.numpy().astype(np.int64)
        self.spent = 0.0  # seconds spent measuring
        self.step = -1  # the step last measured
        self.last = time.perf_counter()

    def due(self) -> bool:
        return self.every > 0 and time.perf_counter() - self.last >= self.every

    def measure(self, backbone: nn.Module, rt: Runtime, num_classes: int) -> Measure:
        t0 = time.perf_counter()
        feats = extract_features(backbone, self.split.images, rt, self.aug, batch_size=256)
        guess = leave_one_out_guess(feats, self.split.labels, num_classes)
        seconds = time.perf_counter() - t0
        self.spent += seconds
        self.last = time.perf_counter()  # the next interval starts after this measurement
        return Measure(guess, feats.half().numpy(), seconds)
