"""Per checkpoint and data source: the feature index of the test images (neighbours, kNN guesses)
and their 2-D UMAP coordinates.

For the embedded sample and the checkpoint its features came from (same sha256), both come
straight from the sample file. Otherwise they are computed once and cached on disk (plain .npy and
JSON, never pickle) under <cache>/explore/<checkpoint-key>-<data>-n<points>-<precision>/; a
checkpoint's key includes its mtime and size, so retraining under the same name misses the cache.
The UMAP fit runs in a child process (services/umap_fit.py), so numba never loads in the server.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from typing import Callable

import numpy as np

from vicreg.data import even_subset
from vicreg.files import atomic_write, atomic_write_text

from .data import DataSource, Precomputed
from .models import FileHashes, ModelCache, file_id, model_key
from .neighbours import FeatureIndex
from .settings import ROOT

Progress = Callable[[float, str], None]
ARRAYS = ("features", "labels", "indices")


def _noop(frac: float, desc: str) -> None:
    pass


class MapStore:
    def __init__(self, models: ModelCache, data: DataSource, hashes: FileHashes, cache_dir: str, map_points: int,
                 heavy: threading.Lock):
        self.models, self.data, self.hashes = models, data, hashes
        self.cache_dir, self.map_points, self.heavy = cache_dir, map_points, heavy
        self._lock = threading.Lock()
        self._indexes: OrderedDict[str, FeatureIndex] = OrderedDict()
        self._maps: dict[str, np.ndarray] = {}

    def _dir(self, path: str) -> str:
        src = self.data.path()  # the file's identity for the sample, the folder's for a dataset
        ident = "|".join(map(str, file_id(src))) if os.path.isfile(src) else os.path.abspath(src)
        tag = ("sample" if self.data.using_sample() else "data") + hashlib.sha1(ident.encode()).hexdigest()[:8]
        prec = "bf16" if self.models.rt.bf16 else "fp32"
        return os.path.join(self.cache_dir, "explore", f"{model_key(path)}-{tag}-n{self.map_points}-{prec}")

    def _precomputed(self, path: str) -> Precomputed | None:
        """The sample's stored features when they belong to this checkpoint file."""
        if not self.data.using_sample():
            return None
        pre = self.data.precomputed()
        return pre if pre is not None and pre.checkpoint_sha256 == self.hashes.sha256(path) else None

    def _remember(self, d: str, idx: FeatureIndex) -> FeatureIndex:
        with self._lock:
            self._indexes[d] = idx
            while len(self._indexes) > 4:
                self._indexes.popitem(last=False)
        return idx

    def _from_precomputed(self, d: str, pre: Precomputed) -> FeatureIndex:
        data = self.data.dataset()
        _, rows = even_subset(data.test, self.map_points)
        idx = FeatureIndex(os.path.basename(d), pre.features[rows], data.test.labels.numpy()[rows], rows,
                           list(data.classes))
        with self._lock:
            self._maps[d] = pre.coords[rows]
        return self._remember(d, idx)

    def cached_index(self, path: str) -> FeatureIndex | None:
        """The index if it is in memory, in the sample or on disk; None if it must be computed."""
        d = self._dir(path)
        with self._lock:
            if d in self._indexes:
                self._indexes.move_to_end(d)
                return self._indexes[d]
        pre = self._precomputed(path)
        if pre is not None:
            return self._from_precomputed(d, pre)
        try:
            with open(os.path.join(d, "meta.json")) as f:
                meta = json.load(f)
            arrays = [np.load(os.path.join(d, f"{n}.npy"), allow_pickle=False) for n in ARRAYS]
        except (OSError, ValueError):
            return None
        return self._remember(d, FeatureIndex(os.path.basename(d), *arrays, meta["classes"]))

    def index(self, path: str, progress: Progress | None = None) -> FeatureIndex:
        """Features of the first `map_points` evenly spaced test images (computed once)."""
        progress = progress or _noop
        hit = self.cached_index(path)
        if hit is not None:
            return hit
        with self.heavy:
            hit = self.cached_index(path)  # another visitor may have built it meanwhile
            if hit is not None:
                return hit
            progress(0.0, "loading the test images")
            data = self.data.dataset()
            sub, rows = even_subset(data.test, self.map_points)
            feats = self.models.features(path, sub.images, progress)
            d = self._dir(path)
            for name, arr in zip(ARRAYS, (feats, sub.labels.numpy(), rows)):
                atomic_write(os.path.join(d, f"{name}.npy"), lambda tmp, arr=arr: np.save(tmp, arr), fsync=False)
            meta = {"checkpoint": os.path.basename(path), "classes": list(data.classes), "points": len(sub)}
            atomic_write_text(os.path.join(d, "meta.json"), json.dumps(meta))
        return self.cached_index(path)

    def cached_umap(self, path: str) -> np.ndarray | None:
        d = self._dir(path)
        with self._lock:
            if d in self._maps:
                return self._maps[d]
        if self._precomputed(path) is not None:
            self.cached_index(path)  # fills _maps from the sample
            return self._maps.get(d)
        f = os.path.join(d, "umap.npy")
        if not os.path.exists(f):
            return None
        coords = np.load(f, allow_pickle=False)
        with self._lock:
            self._maps[d] = coords
        return coords

    def umap(self, path: str, progress: Progress | None = None, timeout: float = 1800) -> np.ndarray:
        """2-D map of the index, fitted in a child process (numba never loads in the server)."""
        progress = progress or _noop
        hit = self.cached_umap(path)
        if hit is not None:
            return hit
        self.index(path, lambda f, desc: progress(0.4 * f, desc))
        with self.heavy:
            if self.cached_umap(path) is None:
                _fit_in_child(self._dir(path), progress, timeout)
        progress(1.0, "map ready")
        return self.cached_umap(path)


def _fit_in_child(d: str, progress: Progress, timeout: float) -> None:
    out, log = os.path.abspath(os.path.join(d, "umap.npy")), os.path.join(d, "umap.log")
    cmd = [sys.executable, "-m", "services.umap_fit", os.path.abspath(os.path.join(d, "features.npy")), out]
    t0 = time.perf_counter()
    with open(log, "w") as lf:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=lf, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                el = time.perf_counter() - t0
                if el > timeout:
                    raise RuntimeError(f"UMAP did not finish within {timeout:.0f}s")
                # no progress from inside UMAP: an estimate (~20 s cold, ~10 s warm for 10k points)
                progress(0.4 + 0.55 * min(1.0, el / 25), f"fitting UMAP ({el:.0f}s; about 10-30 s)")
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if proc.returncode != 0 or not os.path.exists(out):
        with open(log) as lf:
            tail = lf.read()[-600:]
        raise RuntimeError(f"UMAP failed (exit {proc.returncode}): {tail.strip()}")
