"""Where files that should survive a restart go, and where the data, checkpoints and caches live by default: one
rule for the CLI's defaults (TrainConfig) and the app's settings (services/settings.py), read when called (never
at import), so a process can set its variables first."""
from __future__ import annotations

import os
from typing import Mapping

# Used when VICREG_DATA is unset and there is no persistent storage: torchvision downloads CIFAR-10 here.
DEFAULT_DATA_ROOT = "data"
# A Hugging Face Space's persistent storage, when the Space has it: the only folder there that survives a
# restart (everything else written at run time is lost with the container).
SPACE_STORAGE = "/data"


def storage_root(env: Mapping[str, str] | None = None) -> str | None:
    """Where files that should survive a restart go: VICREG_STORAGE, else a Space's persistent storage
    when the Space has it (SPACE_ID set and /data a writable folder), else None (the working folder).
    The one rule for checkpoints, caches and downloaded data, read when called (never at import)."""
    env = os.environ if env is None else env
    if env.get("VICREG_STORAGE"):
        return env["VICREG_STORAGE"]
    if env.get("SPACE_ID") and os.path.isdir(SPACE_STORAGE) and os.access(SPACE_STORAGE, os.W_OK | os.X_OK):
        return SPACE_STORAGE
    return None


def _located(env: Mapping[str, str] | None, variable: str, sub: str, fallback: str) -> str:
    """`variable` if set, else `<storage>/<sub>`, else `fallback`."""
    env = os.environ if env is None else env
    if env.get(variable):
        return env[variable]
    root = storage_root(env)
    return os.path.join(root, sub) if root else fallback


def default_data_root(env: Mapping[str, str] | None = None) -> str:
    """Read when a config or parser is built (never at import), so a process can set it first."""
    return _located(env, "VICREG_DATA", "data", DEFAULT_DATA_ROOT)


def default_checkpoint_dir(env: Mapping[str, str] | None = None) -> str:
    return _located(env, "VICREG_CHECKPOINTS", "checkpoints", "checkpoints")


def home_cache_dir() -> str:
    """The user's own cache folder: where caches go without VICREG_CACHE or persistent storage."""
    return os.path.join(os.path.expanduser("~"), ".cache", "vicreg")


def default_cache_dir(env: Mapping[str, str] | None = None) -> str:
    return _located(env, "VICREG_CACHE", "cache", home_cache_dir())
