"""The learning monitor a visitor watches: Explore's class guess, measured on the run's own model while it trains.

A fixed, class-balanced set of the test split's images (`TrainConfig.watch_images`) is embedded with the
backbone as Explore embeds an upload (32 px, eval-mode BatchNorm folded into the convolutions), and each
image is guessed from the other images of the set with Explore's rule (vicreg.training.evaluate.GUESS_K nearest,
weights exp(sim / GUESS_T)), so the figure is Explore's answer for each of them. It is measured once
before the first step (the untrained start, on the chart as the baseline), then every `watch_every`
seconds of training and after the last step. Its cost is a forward pass over the set; however slow the
CPU, the points are spaced at least nine times the last measurement's time apart, so between points the
monitor never takes more than a tenth of the training time (docs/recipes.md has the measurement); and a run
sized by time keeps only a part of the set when a CPU is too slow for two points between its start and end.

The same features go out with the event (never into the metrics file), so the app can draw the set as a
map that moves as the classes separate (services/features/live_map.py) without embedding anything twice.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from torch import Tensor, nn

from ..core.config import AugmentConfig
from ..core.runtime import Runtime
from .data import Split, even_indices, even_subset
from .evaluate import extract_features, leave_one_out_guess


@dataclass
class Measure:
    guess: float
    features: np.ndarray  # (N, D) float16: the map's input, a quarter of float32's size to pass around
    seconds: float


SHARE = 0.1  # the most of the run's time the monitor may take
# On a slow CPU a point of a few hundred images can cost so much that, spaced to keep to SHARE, the run would show
# only its start and end: a budgeted run knows its planned training time, and a point may then cost at most
# 1/POINT_SHARE of it (the start, two points each nine times their cost apart, and the end fit).
POINT_SHARE = 20
FEWEST = 100  # images the monitor keeps however slow the CPU: fewer would read mostly noise


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
        self.planned_s: float | None = None  # the run's planned training seconds, when its budget fixed them

    def due(self) -> bool:
        gap = max(self.every, self.cost * (1 - SHARE) / SHARE)
        return self.every > 0 and time.perf_counter() - self.last >= gap

    def measure(self, backbone: nn.Module, rt: Runtime, num_classes: int) -> Measure:
        t0 = time.perf_counter()
        feats = extract_features(backbone, self.split.images, rt, self.aug, batch_size=256)
        share = 1.0
        if self.planned_s and self.step < 0:  # the first measurement (the untrained start) sizes the set
            feats, share = self._fit(feats, time.perf_counter() - t0)
        guess = leave_one_out_guess(feats, self.split.labels, num_classes)
        seconds = time.perf_counter() - t0
        self.spent, self.cost = self.spent + seconds, seconds * share
        self.last = time.perf_counter()  # the next interval starts after this measurement
        return Measure(guess, feats.half().numpy(), seconds)

    def _fit(self, feats: Tensor, seconds: float) -> tuple[Tensor, float]:
        """The set cut to an evenly spaced part of it, when a point of the whole set costs more than the planned run
        allows (POINT_SHARE), and the part kept; the first measurement is scored on that part, nothing embedded
        again, so every point of the run is on the same images."""
        n = len(self.labels)
        keep = min(n, max(FEWEST, int(n * self.planned_s / (POINT_SHARE * max(seconds, 1e-9)))))
        if keep >= n:
            return feats, 1.0
        pick = even_indices(n, keep)
        self.split = Split(self.split.images[pick], self.split.labels[pick])
        self.indices, self.labels = self.indices[pick.numpy()], self.labels[pick.numpy()]
        return feats[pick], keep / n
