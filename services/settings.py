"""The app's settings, read from the environment only when `Settings.from_env()` is called.

Environment: VICREG_DATA (CIFAR-10 location; default `data`), VICREG_SAMPLE (the embedded CIFAR-10
sample; default assets/cifar10_sample.npz), VICREG_DEFAULT_CHECKPOINT (the model selected at start;
default checkpoints/cpu90.safetensors), VICREG_CHECKPOINTS (the checkpoint folder), VICREG_CACHE
(feature / map / evaluation caches), VICREG_ADMIN_TOKEN (if set, the app is a public demo: see
services/access.py), VICREG_VISITOR_MINUTES (10: how long a visitor's run may train on a public demo),
VICREG_MAX_UPLOAD_MB (20), VICREG_MAX_PIXELS (40 million), VICREG_MAP_POINTS (10000 test images on the
map), VICREG_APP_THREADS (torch threads for heavy work; 0 = torch's default).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from vicreg.config import DEFAULT_DATA_ROOT

from .access import VISITOR_MINUTES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The shipped demo model and the embedded CIFAR-10 sample that make a fresh clone useful offline.
DEFAULT_CHECKPOINT = os.path.join(ROOT, "checkpoints", "cpu90.safetensors")
SAMPLE = os.path.join(ROOT, "assets", "cifar10_sample.npz")
MAP_POINTS = 10_000  # the whole CIFAR-10 test set
MAX_PIXELS = 40_000_000
MAX_UPLOAD_MB = 20.0


def _short(path: str) -> str:
    """A path below the working directory as a relative one, so pages never show server folders."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _home_cache() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "vicreg")


@dataclass(frozen=True)
class Settings:
    data_root: str = DEFAULT_DATA_ROOT
    sample: str = SAMPLE
    default_checkpoint: str = DEFAULT_CHECKPOINT
    checkpoint_dir: str = "checkpoints"
    cache_dir: str = field(default_factory=_home_cache)
    admin_token: str | None = None
    visitor_minutes: float = VISITOR_MINUTES
    max_upload_mb: float = MAX_UPLOAD_MB
    max_pixels: int = MAX_PIXELS
    map_points: int = MAP_POINTS
    threads: int = 0  # 0 = torch's default
    device: str = "auto"
    precision: str = "auto"

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        return cls(
            data_root=env.get("VICREG_DATA") or DEFAULT_DATA_ROOT,
            sample=env.get("VICREG_SAMPLE") or _short(SAMPLE),
            default_checkpoint=env.get("VICREG_DEFAULT_CHECKPOINT") or _short(DEFAULT_CHECKPOINT),
            checkpoint_dir=env.get("VICREG_CHECKPOINTS") or "checkpoints",
            cache_dir=env.get("VICREG_CACHE") or _home_cache(),
            admin_token=env.get("VICREG_ADMIN_TOKEN") or None,
            visitor_minutes=float(env.get("VICREG_VISITOR_MINUTES") or VISITOR_MINUTES),
            max_upload_mb=float(env.get("VICREG_MAX_UPLOAD_MB") or MAX_UPLOAD_MB),
            max_pixels=int(env.get("VICREG_MAX_PIXELS") or MAX_PIXELS),
            map_points=int(env.get("VICREG_MAP_POINTS") or MAP_POINTS),
            threads=int(env.get("VICREG_APP_THREADS") or 0),
        )
