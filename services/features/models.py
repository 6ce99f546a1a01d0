"""Loaded models, kept per checkpoint file (a few at a time), and the per-image work done with them.

torch's intra-op thread count is per OS thread (new threads inherit the last value set). Per-image
work runs on one thread of its own with 1 torch thread: the ops on one 32x32 image are too small to
split, and on a shared CPU two threads then mostly wait for each other. Heavy work sets `threads`
explicitly, and so must training (TrainConfig.threads).
"""
from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from vicreg.core.config import AugmentConfig, TrainConfig
from vicreg.core.model import VICReg
from vicreg.core.runtime import Runtime, make_runtime, resolve_device
from vicreg.runfiles.files import file_sha256
from vicreg.runfiles.names import checkpoint_stem
from vicreg.runfiles.progress import Progress
from vicreg.training.embed import load_model
from vicreg.training.evaluate import extract_features

from .lru import Lru
from .neighbours import l2_normalize
from .views import training_views


def file_id(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return os.path.abspath(path), st.st_mtime_ns, st.st_size


def model_key(path: str | None) -> str:
    """Identity of a checkpoint for caches: name + hash of path, mtime and size (a retrained file
    gets a new key)."""
    if path is None:
        return "random-seed0"
    h = hashlib.sha1("|".join(map(str, file_id(path))).encode()).hexdigest()[:12]
    return f"{checkpoint_stem(path)[:40]}-{h}"


class FileHashes:
    """sha256 of files, computed once per (path, mtime, size)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._known: dict[tuple[str, int, int], str] = {}

    def sha256(self, path: str) -> str:
        key = file_id(path)
        with self._lock:
            if key in self._known:
                return self._known[key]
        digest = file_sha256(path)
        with self._lock:
            self._known[key] = digest
        return self._known[key]


class ModelCache:
    def __init__(self, device: str = "auto", precision: str = "auto", threads: int = 0, keep: int = 3):
        self._device, self._precision = device, precision
        self.threads = threads or torch.get_num_threads()
        self._rt: Runtime | None = None
        self._models: Lru[tuple[VICReg, TrainConfig]] = Lru(keep)
        self._pending_lock = threading.Lock()
        self._pending: list[tuple[str, np.ndarray, Future]] = []  # embed requests waiting for the light thread
        self._light = ThreadPoolExecutor(1, thread_name_prefix="vicreg-light", initializer=torch.set_num_threads,
                                         initargs=(1,))

    @property
    def rt(self) -> Runtime:
        if self._rt is None:
            self._rt = make_runtime(self._device, self._precision)
        return self._rt

    @property
    def on_gpu(self) -> bool:
        """Whether heavy work runs on an accelerator: the runtime's device, known without making the runtime
        (which also sets torch's thread count) when it is not made yet."""
        return (self._rt.device if self._rt is not None else resolve_device(self._device)).type != "cpu"

    def get(self, path: str | None) -> tuple[VICReg, TrainConfig]:
        """The checkpoint's model in eval mode; path None = the random-initialised baseline."""
        return self._models.get(model_key(path), lambda: load_model(path, self.rt)[:2])

    def embed(self, path: str, pixels: np.ndarray) -> np.ndarray:
        """The backbone embedding (8 x its width features: 512 for ResNet-18) of one (3, 32, 32) uint8 image.

        Requests that arrive while the light thread is busy are embedded together, one batch per
        checkpoint: on one CPU thread a batch of 8 costs about 1.8x a single image, not 8x, so many
        visitors at once cost little more than a few (eval-mode BatchNorm keeps images independent).
        """
        fut: Future = Future()
        with self._pending_lock:
            self._pending.append((path, pixels, fut))
        self._light.submit(self._drain)
        return fut.result()

    def _drain(self) -> None:
        with self._pending_lock:
            todo, self._pending = self._pending, []
        by_path: dict[str, list[tuple[np.ndarray, Future]]] = {}
        for path, pixels, fut in todo:  # an earlier drain may have taken them all: then nothing to do
            by_path.setdefault(path, []).append((pixels, fut))
        for path, items in by_path.items():
            try:
                vecs = self._embed_many(path, [p for p, _ in items])
            except BaseException as e:  # noqa: BLE001 - every waiting caller gets the error (a bad checkpoint)
                for _, fut in items:
                    fut.set_exception(e)
                continue
            for (_, fut), vec in zip(items, vecs, strict=True):
                fut.set_result(vec)

    def _embed_many(self, path: str, images: list[np.ndarray]) -> np.ndarray:
        model, cfg = self.get(path)
        x = torch.from_numpy(np.stack([np.ascontiguousarray(p) for p in images]))
        return extract_features(model.backbone, x, self.rt, cfg.augment).numpy()

    def views(self, pixels: np.ndarray, path: str | None, seed: int) -> tuple[list[np.ndarray], list[dict]]:
        """The checkpoint's training views (services/features/views.py: as many as it drew, at its training view
        side), or the default augmentation's pair at full size without one."""
        aug = self.get(path)[1].augment if path else AugmentConfig()
        return self._light.submit(training_views, pixels, aug, seed).result()

    def features(self, path: str | None, images: torch.Tensor, progress: Progress | None = None) -> np.ndarray:
        """L2-normalised backbone features of many uint8 images, on `threads` threads (heavy work)."""
        torch.set_num_threads(self.threads)
        model, cfg = self.get(path)
        feats = extract_features(model.backbone, images, self.rt, cfg.augment, batch_size=256,
                                 progress=(lambda f, _desc: progress(f, f"embedding {len(images)} test images"))
                                 if progress else None)
        return l2_normalize(feats.numpy())
