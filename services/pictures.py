"""Pictures as files that never change once written, named by their pixels (the page's images:
ui/pictures.py says why gradio's own cache would not do).

A picture is written once, under its content hash, by an atomic rename; a later request for the same
pixels reuses the file, so a file a visitor is downloading is never rewritten under them. Files unused
for `keep_seconds` are swept now and then, so a long-running public server's disk use stays bounded.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Callable

import numpy as np
from PIL import Image

from vicreg.runfiles.files import atomic_write


class PictureFiles:
    def __init__(self, folder: str | Callable[[], str], keep_seconds: float = 3600, sweep_every: int = 1000):
        """`folder`: where the files go, or what says so when the first one is written."""
        self._folder, self.keep_seconds, self.sweep_every = folder, keep_seconds, sweep_every
        self._lock = threading.Lock()
        self._writes = 0

    @property
    def folder(self) -> str:
        if callable(self._folder):
            self._folder = self._folder()
        return self._folder

    def __call__(self, hwc: np.ndarray) -> str:
        """The path of a PNG holding these (H, W, 3) uint8 pixels."""
        arr = np.ascontiguousarray(hwc, dtype=np.uint8)
        digest = hashlib.blake2b(arr.tobytes(), digest_size=16)
        digest.update(repr(arr.shape).encode())
        path = os.path.join(self.folder, f"{digest.hexdigest()}.png")
        try:
            os.utime(path)  # in use again: keep it past the next sweep
            return path
        except FileNotFoundError:
            pass
        im = Image.fromarray(arr)
        atomic_write(path, lambda tmp: im.save(tmp, "PNG", compress_level=1), fsync=False)
        self._count_write()
        return path

    def _count_write(self) -> None:
        with self._lock:
            self._writes += 1
            due = self._writes % self.sweep_every == 0
        if due:
            self.sweep()

    def sweep(self, now: float | None = None) -> int:
        """Delete pictures not used for keep_seconds; returns how many went."""
        cutoff = (now or time.time()) - self.keep_seconds
        gone = 0
        for entry in os.scandir(self.folder):
            try:
                if entry.name.endswith(".png") and entry.stat().st_mtime < cutoff:
                    os.remove(entry.path)
                    gone += 1
            except FileNotFoundError:  # another sweep or a rewrite got there first
                continue
        return gone
