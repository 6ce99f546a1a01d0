"""Feature banks and maps per (checkpoint, data source), on disk and in memory.

A bank is the backbone features of a data source's test images, with their labels and positions in
the test split: neighbours and kNN guesses are found in it. A map is the banks' 2-D UMAP coordinates.
Both live under <cache>/explore/<name>-<checkpoint sha256>-<data fingerprint>-n<points>-<precision>/
as plain .npy and JSON (never pickle). The checkpoint's content hash, not its path or date, so that a
copy of the file, or a Space restart that clones the repository again, still finds them; the data's
fingerprint (vicreg.training.data's decode-cache key for an image folder, the file's hash for a packed .npz),
so that changed data misses them. meta.json is written last: a bank is complete when it is there.
For the embedded sample under the checkpoint its stored features came from, both come from the
sample file itself.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from vicreg.runfiles.files import atomic_write, atomic_write_text
from vicreg.runfiles.names import checkpoint_stem
from vicreg.training.data import cache_path, even_subset

from .data import DataSource
from .lru import Lru
from .models import FileHashes
from .neighbours import FeatureIndex

ARRAYS = ("features", "labels", "indices")


class Missing(Exception):
    """Not in memory, in the sample or on disk (raised inside Lru.get, so that nothing is kept)."""


@dataclass(frozen=True)
class Where:
    """One bank: a checkpoint over a data source's test images (`points` evenly spaced, or all)."""

    checkpoint: str
    data: str
    sample: bool  # the embedded sample's test images
    points: int | None


def _folder_fingerprint(data: str) -> str:
    if os.path.isdir(os.path.join(data, "train")):
        return "d" + os.path.splitext(os.path.basename(cache_path(data)))[0][:12]
    ident = os.path.abspath(data) + "".join(f"|{e.name}:{e.stat().st_mtime_ns}" for e in os.scandir(data))
    return "t" + hashlib.sha1(ident.encode()).hexdigest()[:12]


class BankStore:
    def __init__(self, data: DataSource, hashes: FileHashes, cache_dir: str, map_points: int,
                 precision: Callable[[], str]):
        self.data, self.hashes, self.cache_dir, self.map_points = data, hashes, cache_dir, map_points
        self.precision = precision  # "bf16" or "fp32": features differ slightly between the two
        self._banks: Lru[FeatureIndex] = Lru(4)  # 20 MB each at 10,000 images
        self._maps: Lru[np.ndarray] = Lru(4)
        self._folders: Lru[str] = Lru(8)  # a folder's fingerprint lists every file: once per process, as its decoding

    def where(self, checkpoint: str, data: str | None = None) -> Where:
        """The data in use gets the first `map_points` evenly spaced test images; the sample standing
        in for it, all of its test images."""
        data = data or self.data.path()
        sample = os.path.abspath(data) == os.path.abspath(self.data.sample)
        return Where(checkpoint, data, sample, self.map_points if data == self.data.path() else None)

    def fingerprint(self, data: str) -> str:
        if os.path.isfile(data):
            return "f" + self.hashes.sha256(data)[:12]
        return self._folders.get(os.path.abspath(data), lambda: _folder_fingerprint(data))

    def folder(self, w: Where) -> str:
        name = f"{checkpoint_stem(w.checkpoint)[:40]}-{self.hashes.sha256(w.checkpoint)[:16]}"
        points = "all" if w.points is None else f"n{w.points}"
        tag = ("sample" if w.sample else "data") + self.fingerprint(w.data)
        return os.path.join(self.cache_dir, "explore", f"{name}-{tag}-{points}-{self.precision()}")

    def test_images(self, w: Where) -> tuple:
        """(test split, rows of it in the bank, classes)."""
        data = self.data.dataset(w.data)
        rows = np.arange(len(data.test)) if w.points is None else even_subset(data.test, w.points)[1]
        return data.test, rows, list(data.classes)

    def _precomputed(self, w: Where):
        pre = self.data.precomputed() if w.sample else None
        return pre if pre is not None and pre.checkpoint_sha256 == self.hashes.sha256(w.checkpoint) else None

    def _load_bank(self, w: Where, d: str) -> FeatureIndex:
        pre = self._precomputed(w)
        if pre is not None:
            test, rows, classes = self.test_images(w)
            return FeatureIndex(os.path.basename(d), pre.features[rows], test.labels.numpy()[rows], rows, classes)
        try:
            with open(os.path.join(d, "meta.json")) as f:
                classes = json.load(f)["classes"]
            arrays = [np.load(os.path.join(d, f"{n}.npy"), allow_pickle=False) for n in ARRAYS]
        except (OSError, ValueError, KeyError):
            raise Missing(d) from None
        return FeatureIndex(os.path.basename(d), *arrays, classes)

    def bank(self, w: Where) -> FeatureIndex | None:
        d = self.folder(w)
        try:
            return self._banks.get(d, lambda: self._load_bank(w, d))
        except Missing:
            return None

    def _load_map(self, w: Where, d: str) -> np.ndarray:
        pre = self._precomputed(w)
        if pre is not None:
            return pre.coords[self.test_images(w)[1]]
        try:
            return np.load(os.path.join(d, "umap.npy"), allow_pickle=False)
        except (OSError, ValueError):
            raise Missing(d) from None

    def coords(self, w: Where) -> np.ndarray | None:
        d = self.folder(w)
        try:
            return self._maps.get(d, lambda: self._load_map(w, d))
        except Missing:
            return None

    def save_bank(self, w: Where, feats: np.ndarray, labels: np.ndarray, rows: np.ndarray, classes: list) -> None:
        d = self.folder(w)
        for name, arr in zip(ARRAYS, (feats, labels, rows), strict=True):
            atomic_write(os.path.join(d, f"{name}.npy"), lambda tmp, arr=arr: np.save(tmp, arr), fsync=False)
        meta = {"checkpoint": os.path.basename(w.checkpoint), "classes": classes, "points": len(rows)}
        atomic_write_text(os.path.join(d, "meta.json"), json.dumps(meta))
