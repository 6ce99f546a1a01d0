"""The one atomic file write: a unique temporary file in the target's folder, then a rename.

A reader sees the old file or the new one, never half of one, even if the writer is killed, and two
writers of the same path never share a temporary name.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from typing import Callable


def atomic_write(path: str, write: Callable[[str], None], fsync: bool = True) -> str:
    """Call `write(tmp)` to fill a temporary file, then rename it onto `path`; returns `path`.

    The temporary name ends with the target's extension, because np.save / np.savez append one
    when it is missing; so a target for them must carry its extension (.npy / .npz) itself.
    """
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    ext = os.path.splitext(path)[1]
    # the writer creates the file itself, so it gets the usual permissions (mkstemp's would be 0600)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp{ext}")
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_text(path: str, text: str) -> str:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (checkpoints are tens of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
