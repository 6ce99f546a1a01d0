"""Where the app's images come from: the configured CIFAR-10 copy when it is there, otherwise the
embedded sample (2,000 training and 6,000 test images, with the default model's precomputed features and map).

Nothing here touches the network except `download`, which a visitor starts with a button.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

from vicreg.runfiles.progress import Progress
from vicreg.training.data import DataError, Dataset, load_dataset

CIFAR_HOST = ("www.cs.toronto.edu", 443)  # where torchvision downloads CIFAR-10 from
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_BYTES = 170_498_071
CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
               "batches.meta")


@dataclass
class Precomputed:
    """The sample's features of its test images under one checkpoint, and their 2-D map."""

    features: np.ndarray  # (N, D) float32, L2-normalised
    coords: np.ndarray  # (N, 2) float32
    checkpoint_sha256: str  # of the checkpoint file the features came from


def holds_full_dataset(root: str) -> bool:
    """A packed .npz, an image folder (train/ and test/) or an extracted torchvision CIFAR-10 root."""
    if root.endswith(".npz"):
        return os.path.isfile(root)
    if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test")):
        return True
    batches = os.path.join(root, "cifar-10-batches-py")
    return all(os.path.isfile(os.path.join(batches, b)) for b in CIFAR_FILES)


class DataSource:
    def __init__(self, root: str, sample: str, cache_dir: str | None = None):
        self.root, self.sample, self.cache_dir = root, sample, cache_dir
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}  # one per path: loading one never blocks another
        self._loaded: dict[str, Dataset] = {}
        self._precomputed: Precomputed | None = None
        self._sizes: tuple[int, int] | None = None

    def full_available(self) -> bool:
        return holds_full_dataset(self.root)

    def has_sample(self) -> bool:
        return os.path.isfile(self.sample)

    def sample_sizes(self) -> tuple[int, int]:
        """(training images, test images) in the embedded sample; (0, 0) without a readable one."""
        with self._lock:
            if self._sizes is None:
                try:
                    with np.load(self.sample, allow_pickle=False) as z:
                        self._sizes = (len(z["train_y"]), len(z["test_y"]))
                except (OSError, ValueError, KeyError):
                    self._sizes = (0, 0)
            return self._sizes

    def using_sample(self) -> bool:
        return not self.full_available() and self.has_sample()

    def path(self) -> str:
        """The data in use now: the configured dataset, else the sample (else the configured root, so
        that loading it raises the error that says what is missing)."""
        return self.sample if self.using_sample() else self.root

    def dataset(self, path: str | None = None, progress: Progress | None = None) -> Dataset:
        """Loaded once per process and path (the training job's data loader uses this too); never
        downloads (torchvision would, into a root that does not hold CIFAR-10). A caller that finds the
        path being loaded waits for that load; other paths (the sample) stay available meanwhile."""
        path = os.path.abspath(path or self.path())
        with self._lock:
            if path in self._loaded:
                return self._loaded[path]
            loading = self._loading.setdefault(path, threading.Lock())
        with loading:
            with self._lock:
                if path in self._loaded:
                    return self._loaded[path]
            if not holds_full_dataset(path):
                raise DataError(f"no CIFAR-10 at {path} and no embedded sample; set VICREG_DATA")
            each = (lambda n, total: progress(n / total, f"decoding the images: {n:,} of {total:,}")) if progress \
                else None
            data = load_dataset(path, cache_dir=self.cache_dir, progress=each)
            with self._lock:
                self._loaded[path] = data
            return data

    def loaded(self, path: str | None = None) -> bool:
        """Whether `dataset(path)` would answer at once."""
        with self._lock:
            return os.path.abspath(path or self.path()) in self._loaded

    def precomputed(self) -> Precomputed | None:
        """The sample's stored features and map (None when it has none)."""
        with self._lock:
            if self._precomputed is None and os.path.isfile(self.sample):
                with np.load(self.sample, allow_pickle=False) as z:
                    if {"features", "umap", "features_checkpoint"} <= set(z.files):
                        feats = z["features"].astype(np.float32)
                        feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
                        self._precomputed = Precomputed(feats, z["umap"].astype(np.float32),
                                                        str(z["features_checkpoint"]))
            return self._precomputed

    def download(self, progress: Progress, timeout: float = 3.0) -> Dataset:
        """Download CIFAR-10 into the configured root with torchvision (170 MB), reporting progress."""
        if self.full_available():
            return self.dataset(self.root)
        if self.root.endswith(".npz"):
            raise DataError("the configured data is a .npz file; downloads need a folder (set VICREG_DATA)")
        try:
            socket.create_connection(CIFAR_HOST, timeout=timeout).close()
        except OSError as e:
            raise DataError(f"CIFAR-10's server cannot be reached from here (offline?): {e}") from None
        result: dict = {}
        worker = threading.Thread(target=self._fetch, args=(result,), daemon=True, name="vicreg-download")
        worker.start()
        archive = os.path.join(self.root, CIFAR_ARCHIVE)
        while worker.is_alive():
            size = os.path.getsize(archive) if os.path.exists(archive) else 0
            progress(min(0.95, 0.95 * size / CIFAR_BYTES), f"downloading CIFAR-10: {size / 1e6:.0f} of 170 MB")
            time.sleep(0.5)
        if "error" in result:
            raise result["error"]
        progress(1.0, "CIFAR-10 ready")
        return result["data"]

    def _fetch(self, result: dict) -> None:
        """The download itself, outside the lock: visitors keep using the sample meanwhile."""
        try:
            data = load_dataset(self.root, cache_dir=self.cache_dir)
            with self._lock:
                result["data"] = self._loaded[os.path.abspath(self.root)] = data
        except Exception as e:  # handed to the waiting caller
            result["error"] = e if isinstance(e, DataError) else DataError(f"{type(e).__name__}: {e}")

