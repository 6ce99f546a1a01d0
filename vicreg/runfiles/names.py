"""Run names and the checkpoint folder: what a name may be, where its files go, and the check that no
file is read or written through a link leading out of the folder."""
from __future__ import annotations

import os

SUFFIX = ".safetensors"
# The files a run writes beside each other in the checkpoint folder: the checkpoint, its JSON sidecar,
# the metrics log (appended to, and cut back to its last whole line, in place) and INFERENCE's output.
RUN_FILE_SUFFIXES = (SUFFIX, ".json", ".metrics.jsonl", ".embeddings.npy")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, does not match the model asked for, or a run name that
    could escape the checkpoint folder."""


def checkpoint_stem(path: str) -> str:
    """'checkpoints/cpu90.safetensors' -> 'cpu90': the run name a checkpoint file carries."""
    base = os.path.basename(path)
    return base[: -len(SUFFIX)] if base.endswith(SUFFIX) else os.path.splitext(base)[0]


def sidecar_path(path: str) -> str:
    """The JSON copy of a checkpoint's metadata, for people and tools without torch."""
    return path[: -len(SUFFIX)] + ".json" if path.endswith(SUFFIX) else path + ".json"


def leads_out(path: str, folder: str) -> bool:
    """True if `path` resolves (symlinks followed) to somewhere outside `folder`."""
    root, real = os.path.realpath(folder), os.path.realpath(path)
    return os.path.commonpath([root, real]) != root


def safe_name(name: str, checkpoint_dir: str | None = None) -> str:
    """Checkpoint name -> file stem; refuses anything that could escape the checkpoint folder: a path
    (`../x`, `/abs`, `a/b`, `a\\b`), a hidden name, control characters (NUL, newline, ...), an overlong
    name and, given the folder, a name whose files there are symlinks leading out of it: the atomic
    writes would only replace such a link, but the metrics log is appended to and cut through it."""
    name = str(name)
    if name.endswith(SUFFIX):
        base = name[: -len(SUFFIX)]
    else:
        base = os.path.splitext(name)[0] if name.endswith((".pth", ".pt")) else name
    shown = repr(name if len(name) <= 80 else name[:80] + "…")
    if not base or base in (".", "..") or "/" in base or "\\" in base or os.path.isabs(name) or base.startswith("."):
        raise CheckpointError(f"invalid checkpoint name {shown}: use a plain file name such as 'vicreg_model' "
                              "(it is saved under the checkpoint folder)")
    if any(ord(c) < 32 or ord(c) == 127 for c in base) or len(base) > 200:
        raise CheckpointError(f"invalid checkpoint name {shown}: use at most 200 letters, digits, '-' or '_', "
                              "without control characters such as newlines")
    if checkpoint_dir is not None:
        for suffix in RUN_FILE_SUFFIXES:
            path = os.path.join(checkpoint_dir, base + suffix)
            if os.path.islink(path) and leads_out(path, checkpoint_dir):
                raise CheckpointError(f"the checkpoint name {base!r} is taken by a link ({base}{suffix}) that "
                                      "leads out of the checkpoint folder; choose another name")
    return base


def checkpoint_path(checkpoint_dir: str, name: str) -> str:
    """Where run `name` saves; refuses names whose files in the folder are links leading out of it."""
    return os.path.join(checkpoint_dir, safe_name(name, checkpoint_dir) + SUFFIX)


def metrics_path(checkpoint_dir: str, name: str) -> str:
    """Run `name`'s metrics log (one JSON event a line) in the checkpoint folder."""
    return os.path.join(checkpoint_dir, safe_name(name) + ".metrics.jsonl")
