"""One rule for every message a visitor sees: no absolute server path, no environment value and no
traceback. The tests of hostile checkpoints, uploads, path attacks and concurrent visitors pass each
message they get through `scan`, which counts them; the session's summary prints the totals."""
from __future__ import annotations

import os
import re
from typing import Iterable

# a path that starts at the root of this machine's usual folders, after a space, quote, bracket or tag
ABS_PATH = re.compile(r"(?:^|[\s(\"'=`>:])/(?:tmp|home|work|usr|etc|var|root|srv|opt|proc|dev|mnt|run)\b")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \"[^\"]+\", line \d+", re.M)
SEEN: dict = {"scanned": 0, "leaking": []}


def env_values(extra: Iterable[str] = ()) -> set[str]:
    """Environment values long enough to be telling (paths, tokens), and the test's own secrets."""
    return {v for v in list(os.environ.values()) + list(extra) if len(v) >= 8}


def leaks(text: str, extra: Iterable[str] = ()) -> list[str]:
    text = str(text)
    found = ["traceback"] if TRACEBACK.search(text) else []
    found += [f"absolute path {m.group(0).strip()!r}" for m in ABS_PATH.finditer(text)]
    found += [f"environment value {v[:12]!r}..." for v in env_values(extra) if v in text]
    return found


def scan(text: str, extra: Iterable[str] = ()) -> list[str]:
    """leaks(), counted for the session summary."""
    found = leaks(text, extra)
    SEEN["scanned"] += 1
    if found:
        SEEN["leaking"].append((str(text)[:200], found))
    return found
