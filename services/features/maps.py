"""Per checkpoint: the feature bank of the test images (neighbours, kNN guesses) and their 2-D map,
for the data in use, and what stands in for them until they are built.

A checkpoint chosen on the page (`select`) gets, in the background (services/features/banks.py): the embedded
sample's bank, when the full dataset is in use (the sample's stored features make it instant for the
default model), then the full bank, then its map. `best` answers at once with the best bank there is.
An API caller that waits for a bank (`index`) or a map (`umap`) asks for just what it needs.
On disk: services/features/bank_store.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from vicreg.runfiles.progress import Progress, noop

from .bank_store import BankStore, Where
from .banks import BANK, FAILED, MAP, Builder, Stage
from .data import DataSource
from .models import FileHashes, ModelCache
from .neighbours import FeatureIndex


@dataclass
class Bank:
    """A bank ready to query, with what showing its answers needs."""

    where: Where
    index: FeatureIndex
    images: torch.Tensor  # the test split its rows point into (for thumbnails)
    coords: np.ndarray | None  # its map, once fitted
    stand_in: bool  # the sample's bank, while the full dataset's is built


class MapStore:
    def __init__(self, models: ModelCache, data: DataSource, hashes: FileHashes, cache_dir: str, map_points: int):
        self.data = data
        self.store = BankStore(data, hashes, cache_dir, map_points, lambda: "bf16" if models.rt.bf16 else "fp32")
        self.builder = Builder(self.store, models)

    def main(self, path: str) -> Where:
        """The bank of the data in use."""
        return self.store.where(path)

    def stand_in(self, path: str) -> Where | None:
        """The embedded sample's bank, when the full dataset is in use."""
        return self.store.where(path, self.data.sample) if self.data.full_available() and self.data.has_sample() \
            else None

    def select(self, path: str) -> None:
        """A checkpoint chosen on the page: everything it will need, built in the background."""
        stand_in, main = self.stand_in(path), self.main(path)
        # not tried again on every page load when it failed: a visitor's Compute / upload asks again
        self.builder.request(([(BANK, stand_in)] if stand_in else []) + [(BANK, main), (MAP, main)], retry=False)

    def need_bank(self, path: str) -> Stage:
        return self.builder.request([(BANK, self.main(path))])[0]

    def need_map(self, path: str) -> Stage:
        return self.builder.request([(BANK, self.main(path)), (MAP, self.main(path))])[1]

    def stage(self, kind: str, path: str) -> Stage | None:
        return self.builder.stage(kind, self.main(path))

    def _ready(self, w: Where | None, stand_in: bool) -> Bank | None:
        if w is None or (index := self.store.bank(w)) is None:
            return None
        if not (w.sample or self.data.loaded(w.data)):
            return None  # the builder loads it next: until then its thumbnails could not be shown
        return Bank(w, index, self.data.dataset(w.data).test.images, self.store.coords(w), stand_in)

    def best(self, path: str) -> Bank | None:
        """The data in use's bank if it is ready, else the sample's standing in, else None (at once)."""
        return self._ready(self.main(path), False) or self._ready(self.stand_in(path), True)

    def full(self, path: str) -> Bank | None:
        return self._ready(self.main(path), False)

    def best_map(self, path: str) -> Bank | None:
        """The data in use's bank with its map if both are ready, else the sample's standing in, else None."""
        for bank in (self.full(path), self._ready(self.stand_in(path), True)):
            if bank is not None and bank.coords is not None:
                return bank
        return None

    def pause(self, st: Stage, seconds: float) -> None:
        """Until the stage is done or `seconds` pass, whichever comes first (never raises)."""
        self.builder.wait(st, seconds)

    def wait(self, st: Stage, progress: Progress | None = None, timeout: float = 1800) -> None:
        progress, t0 = progress or noop, time.perf_counter()
        while not st.done:
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"not ready within {timeout:.0f}s ({st.text})")
            progress(st.fraction, st.text)
            self.pause(st, 1.0)
        if st.state == FAILED:
            raise RuntimeError(st.error)

    def cached_index(self, path: str) -> FeatureIndex | None:
        return self.store.bank(self.main(path))

    def cached_umap(self, path: str) -> np.ndarray | None:
        return self.store.coords(self.main(path))

    def index(self, path: str, progress: Progress | None = None, timeout: float = 1800) -> FeatureIndex:
        """The bank of the data in use, built first if need be (waits)."""
        hit = self.cached_index(path)
        if hit is None:
            self.wait(self.need_bank(path), progress, timeout)
            hit = self.cached_index(path)
        return hit

    def umap(self, path: str, progress: Progress | None = None, timeout: float = 1800) -> np.ndarray:
        """The map of the data in use, fitted first if need be (waits)."""
        hit = self.cached_umap(path)
        if hit is None:
            self.wait(self.need_map(path), progress, timeout)
            hit = self.cached_umap(path)
        (progress or noop)(1.0, "map ready")
        return hit
