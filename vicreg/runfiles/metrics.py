"""A run's metrics file, `<name>.metrics.jsonl`: one JSON event per line, appended to by every run
under that name (a resume continues the same file).

A process killed while writing leaves a torn last line: bytes after the last newline. A line counts
once its newline is written, so the reader skips such a tail, and a run that opens the file to append
cuts it off first, so it never ends up in the middle of the file.
"""
from __future__ import annotations

import json
import os
from typing import IO, Any

_BLOCK = 1 << 16


def open_for_append(path: str) -> IO[str]:
    """The metrics file opened for appending whole lines, a torn tail cut off first."""
    cut_torn_tail(path)
    return open(path, "a", encoding="utf-8")


def cut_torn_tail(path: str) -> int:
    """Truncate the file after its last newline; returns the number of bytes cut (0: it was whole)."""
    try:
        f = open(path, "rb+")
    except FileNotFoundError:
        return 0
    with f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return 0
        f.seek(end - 1)
        if f.read(1) == b"\n":  # the usual case: one byte read
            return 0
        pos, keep = end, 0
        while pos > 0:  # the torn tail is at most one event long, so this reads a block or two
            start = max(0, pos - _BLOCK)
            f.seek(start)
            nl = f.read(pos - start).rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        f.truncate(keep)
        return end - keep


def read_metrics(path: str) -> list[dict[str, Any]]:
    """Every complete event in the file, in order; a torn last line is skipped. A complete line that is
    not JSON is not a crash's trace but damage, and raises ValueError naming the line."""
    with open(path, "rb") as f:
        *lines, _tail = f.read().split(b"\n")  # the tail after the last newline: b"" or a torn line
    events = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except ValueError as e:
            raise ValueError(f"{path}: line {i} is not a JSON event ({e})") from None
    return events
