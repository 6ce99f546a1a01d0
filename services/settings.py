"""The app's settings, read from the environment only when `Settings.from_env()` is called.

Environment: VICREG_STORAGE (a folder that survives restarts: checkpoints, caches and downloaded data go
to its checkpoints/, cache/ and data/; on a Space with persistent storage, /data is used without it:
vicreg.core.storage.storage_root), VICREG_DATA (CIFAR-10 location; default `data`), VICREG_SAMPLE (the
embedded CIFAR-10 sample; default assets/cifar10_sample.npz), VICREG_DEFAULT_CHECKPOINT (the model
selected at start; default checkpoints/<vicreg.core.presets.DEFAULT_MODEL>.safetensors), VICREG_CHECKPOINTS (the
checkpoint folder), VICREG_CACHE (feature / map / evaluation caches), GRADIO_SERVER_NAME (the address to
listen on; default 127.0.0.1, 0.0.0.0 on a Space: services/exposure.py), SPACE_ID (set by Hugging Face Spaces),
VICREG_ADMIN_TOKEN (the admin secret of a public demo: services/access.py), VICREG_OPEN_ACCESS (1: a
server others can reach lets everyone do everything), VICREG_VISITOR_MINUTES (10: how long a visitor's
run may train on a public demo), VICREG_VISITOR_KEEP (3) and VICREG_VISITOR_MB (1024: what is kept of
visitors' runs, services/visitors.py), VICREG_MAX_UPLOAD_MB (20), VICREG_MAX_PIXELS (40 million),
VICREG_MAP_POINTS (10000 test images on the map), VICREG_APP_THREADS (torch threads for heavy work; 0 =
the CPUs this process may use, vicreg.core.runtime.available_cpus).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

from vicreg.core.presets import DEFAULT_MODEL
from vicreg.core.runtime import available_cpus
from vicreg.core.storage import (
    DEFAULT_DATA_ROOT,
    default_cache_dir,
    default_checkpoint_dir,
    default_data_root,
    home_cache_dir,
)
from vicreg.runfiles.names import SUFFIX

from . import exposure, gpu, visitors
from .access import VISITOR_MINUTES, Access

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The shipped demo model and the embedded CIFAR-10 sample that make a fresh clone useful offline.
DEFAULT_CHECKPOINT = os.path.join(ROOT, "checkpoints", DEFAULT_MODEL + SUFFIX)
SAMPLE = os.path.join(ROOT, "assets", "cifar10_sample.npz")
MAP_POINTS = 10_000  # the whole CIFAR-10 test set
MAX_PIXELS = 40_000_000
MAX_UPLOAD_MB = 20.0


def upload_bytes(mb: float) -> int:
    """An upload limit given in MB (VICREG_MAX_UPLOAD_MB), in bytes."""
    return int(mb * 1024 * 1024)


def _short(path: str) -> str:
    """A path below the working directory as a relative one, so pages never show server folders."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


@dataclass(frozen=True)
class Settings:
    data_root: str = DEFAULT_DATA_ROOT
    sample: str = SAMPLE
    default_checkpoint: str = DEFAULT_CHECKPOINT
    checkpoint_dir: str = "checkpoints"
    cache_dir: str = field(default_factory=home_cache_dir)
    admin_token: str | None = None
    visitor_minutes: float = VISITOR_MINUTES
    visitor_keep: int = visitors.KEEP
    visitor_mb: float = visitors.MAX_MB
    host: str = exposure.LOCAL  # the address the app listens on
    space: bool = False  # running on a Hugging Face Space
    open_access: bool = False
    max_upload_mb: float = MAX_UPLOAD_MB
    max_pixels: int = MAX_PIXELS
    map_points: int = MAP_POINTS
    threads: int = field(default_factory=available_cpus)
    device: str = "auto"
    precision: str = "auto"

    @property
    def max_bytes(self) -> int:
        return upload_bytes(self.max_upload_mb)

    @property
    def reachable(self) -> bool:
        """Strangers can reach the app (on a Space, or bound to a non-loopback address)."""
        return exposure.reachable(self.host, self.space)

    def access(self) -> Access:
        return Access(self.admin_token, self.visitor_minutes, self.reachable, self.open_access)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, host: str | None = None) -> "Settings":
        """`host`: the address asked for on the command line (app.py --host), if any."""
        env = os.environ if env is None else env
        return cls(
            data_root=default_data_root(env),
            sample=env.get("VICREG_SAMPLE") or _short(SAMPLE),
            default_checkpoint=env.get("VICREG_DEFAULT_CHECKPOINT") or _short(DEFAULT_CHECKPOINT),
            checkpoint_dir=default_checkpoint_dir(env),
            cache_dir=default_cache_dir(env),
            admin_token=env.get("VICREG_ADMIN_TOKEN") or None,
            visitor_minutes=float(env.get("VICREG_VISITOR_MINUTES") or VISITOR_MINUTES),
            visitor_keep=int(env.get("VICREG_VISITOR_KEEP") or visitors.KEEP),
            visitor_mb=float(env.get("VICREG_VISITOR_MB") or visitors.MAX_MB),
            host=exposure.bind_host(env, host),
            space=exposure.on_space(env),
            open_access=exposure.flag(env.get("VICREG_OPEN_ACCESS")),
            max_upload_mb=float(env.get("VICREG_MAX_UPLOAD_MB") or MAX_UPLOAD_MB),
            max_pixels=int(env.get("VICREG_MAX_PIXELS") or MAX_PIXELS),
            map_points=int(env.get("VICREG_MAP_POINTS") or MAP_POINTS),
            threads=int(env.get("VICREG_APP_THREADS") or 0) or available_cpus(),
            # on ZeroGPU `spaces` makes CUDA look available in the main process, where no GPU exists outside
            # a spaces.GPU call: the app's own models stay on the CPU there (training runs in the calls)
            device="cpu" if gpu.zero_gpu(env) else "auto",
        )
