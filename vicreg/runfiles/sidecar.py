"""Does a checkpoint's JSON sidecar agree with the file? (vicreg.runfiles.checkpoint refuses the file when not.)

The checkpoint's embedded metadata is authoritative; the sidecar is a copy for people and tools
without torch, so a sidecar that says otherwise would mislead them. Agreement means the same format,
packed flag and config, and no more progress (step, epoch) than the file. A sidecar BEHIND the file
is the trace of a crash between a checkpoint's rename and its sidecar's write, left by versions that
did not remove the old sidecar first; a resume may have changed the run settings and the total epochs
in between, so for such a sidecar only the recipe has to match. One small read, as listing the
checkpoints checks every file.
"""
from __future__ import annotations

import json
import os
import stat
from typing import Any, Iterable

MAX_SIDECAR_BYTES = 16 << 20  # a sidecar is a few KB; its largest part is an evaluation report


def disagreement(side: str, meta: dict[str, Any], resume_may_change: Iterable[str]) -> str | None:
    """None when the sidecar at `side` agrees with the file's metadata `meta`; otherwise what is wrong,
    as the end of a sentence that starts with the sidecar's name."""
    try:
        if not stat.S_ISREG(os.stat(side).st_mode):  # a FIFO or device would block or never end
            return "is not a regular file"
        with open(side, "rb") as f:
            raw = f.read(MAX_SIDECAR_BYTES + 1)
        if len(raw) > MAX_SIDECAR_BYTES:
            return f"is larger than {MAX_SIDECAR_BYTES >> 20} MiB"
        claim = json.loads(raw)
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or UTF-8
        return f"is not readable JSON ({type(e).__name__}: {' '.join(str(e).split())[:120]})"
    if not isinstance(claim, dict):
        return "is not a JSON object"
    for key in ("format", "packed"):
        if claim.get(key, False) != meta.get(key, False):
            return f"says {key} {claim.get(key)!r} where the file says {meta.get(key)!r}"
    for key in ("epoch", "step"):
        value = claim.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value > meta.get(key, 0):
            return f"claims {key} {value!r} where the file has reached {meta.get(key, 0)}"
    mine, theirs = meta["config"], claim.get("config")
    if not isinstance(theirs, dict):
        return "has no config"
    if (claim.get("epoch", 0), claim.get("step", 0)) != (meta.get("epoch", 0), meta.get("step", 0)):
        skip = set(resume_may_change)
        mine, theirs = ({k: v for k, v in c.items() if k not in skip} for c in (mine, theirs))
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    return f"disagrees with it about the config ({', '.join(differ[:4])})" if differ else None
