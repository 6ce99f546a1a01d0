"""The one atomic file write: a unique temporary file in the target's folder, then a rename.

A reader sees the old file or the new one, never half of one, even if the writer is killed, and two
writers of the same path never share a temporary name. A writer killed mid-write (SIGKILL, power)
leaves its temporary file behind: a dot-file named after the target and the writer's process id,
which listings skip and `sweep_stale_temps` removes once that process is gone.
"""
from __future__ import annotations

import hashlib
import os
import re
import uuid
from typing import Callable

# .<target name>.<writer pid>-<12 hex>.tmp<target extension>
_TEMP = re.compile(r"\.(?P<base>.+)\.(?P<pid>\d+)-[0-9a-f]{12}\.tmp(\.[^./]*)?")


def atomic_write(path: str, write: Callable[[str], None], fsync: bool = True,
                 on_written: Callable[[str], None] | None = None) -> str:
    """Call `write(tmp)` to fill a temporary file, then rename it onto `path`; returns `path`.
    `on_written(tmp)` runs with the temporary file complete, just before the rename.

    The temporary name ends with the target's extension, because np.save / np.savez append one
    when it is missing; so a target for them must carry its extension (.npy / .npz) itself.
    """
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    ext = os.path.splitext(path)[1]
    # the writer creates the file itself, so it gets the usual permissions (mkstemp's would be 0600)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp{ext}")
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        if on_written is not None:
            on_written(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_text(path: str, text: str, on_written: Callable[[str], None] | None = None) -> str:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write, on_written=on_written)


def sweep_stale_temps(path: str) -> list[str]:
    """Remove the temporary files that killed writers of `path` left in its folder; returns them.
    A live writer's file stays (its process still exists; on systems without POSIX signals every
    file stays, as os.kill there would end the process instead of probing it)."""
    folder, base = os.path.dirname(path) or ".", os.path.basename(path)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        m = _TEMP.fullmatch(name)
        if m is None or m["base"] != base or _alive(int(m["pid"])):
            continue
        try:
            os.remove(os.path.join(folder, name))
            removed.append(os.path.join(folder, name))
        except OSError:  # another sweeper got there first, or no permission: nothing to tidy here
            pass
    return removed


def _alive(pid: int) -> bool:
    if os.name != "posix" or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: no signal, only "does it exist"
    except ProcessLookupError:
        return False
    except OSError:  # it exists but is another user's
        return True
    return True


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (checkpoints are tens of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
