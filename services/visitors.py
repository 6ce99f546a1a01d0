"""Visitors' runs cannot fill the disk: the one rule for what a public demo keeps of them (no gradio).

A visitor's run is saved as `visitor-<name>-<6 hex>` in the checkpoint folder. Before a visitor's run
starts, and after a run ends, only the newest `keep` visitor runs are kept, and only while their files
(checkpoint, JSON sidecar, metrics log, INFERENCE output) stay within `max_mb` in total: the newest
first, and once one no longer fits, it and every older one go. Before a run, room is made for it (one
run fewer, and the size of the largest kept run set aside), so the count and the size still hold
when it has saved. Only files named `visitor-*` are touched: never the shipped model, never an admin's
checkpoints, never a symlink, and nothing at all while a run is in progress.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass

from vicreg.orchestration.jobs import TrainingJob
from vicreg.runfiles.names import RUN_FILE_SUFFIXES

PREFIX = "visitor-"
KEEP = 3
MAX_MB = 1024.0
log = logging.getLogger("vicreg.app")


def visitor_name(requested: str | None) -> str:
    """The run name for a visitor's request: `visitor-<their name, tidied>-<6 hex>`, new every time, so
    a visitor can neither overwrite nor append to anyone's run (their own earlier ones included)."""
    base = str(requested or "").strip()
    base = base[len(PREFIX):] if base.startswith(PREFIX) else base
    base = re.sub(r"[^\w-]+", "_", base, flags=re.ASCII).strip("_-")[:40] or "run"
    return f"{PREFIX}{base}-{secrets.token_hex(3)}"


@dataclass
class RunFiles:
    stem: str
    files: list[str]
    size: int
    mtime: float


def visitor_runs(folder: str) -> list[RunFiles]:
    """The visitor runs in `folder` (regular files only), newest first."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    suffixes = sorted(RUN_FILE_SUFFIXES, key=len, reverse=True)
    runs: dict[str, RunFiles] = {}
    for name in names:
        suffix = next((s for s in suffixes if name.endswith(s)), None)
        if not name.startswith(PREFIX) or suffix is None:
            continue
        path = os.path.join(folder, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        run = runs.setdefault(name[: -len(suffix)], RunFiles(name[: -len(suffix)], [], 0, 0.0))
        run.files.append(path)
        run.size += st.st_size
        run.mtime = max(run.mtime, st.st_mtime)
    return sorted(runs.values(), key=lambda r: (r.mtime, r.stem), reverse=True)


def prune(folder: str, keep: int, max_bytes: int) -> list[str]:
    """Delete all but the newest visitor runs that fit in `keep` runs and `max_bytes`; returns the
    removed run names."""
    kept_n = kept_bytes = 0
    removed, full = [], False
    for run in visitor_runs(folder):
        full = full or kept_n >= keep or kept_bytes + run.size > max_bytes
        if not full:
            kept_n, kept_bytes = kept_n + 1, kept_bytes + run.size
            continue
        for path in run.files:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
        removed.append(run.stem)
    return removed


class VisitorRuns:
    """The rule above for one checkpoint folder and one training job."""

    def __init__(self, folder: str, keep: int = KEEP, max_mb: float = MAX_MB):
        self.folder, self.keep, self.max_bytes = folder, max(0, int(keep)), int(max_mb * 1024 * 1024)
        self._lock = threading.Lock()  # one pruning at a time: two at once would count the same files

    def before_run(self, job: TrainingJob) -> list[str]:
        """Make room for one more visitor run (nothing while a run is in progress)."""
        if job.snapshot().active:
            return []
        reserve = max((r.size for r in visitor_runs(self.folder)[: self.keep]), default=0)
        return self._prune(max(0, self.keep - 1), max(0, self.max_bytes - reserve))

    def after_run(self, job: TrainingJob) -> list[str]:
        """Keep the newest `keep` within the size (nothing while a run is in progress)."""
        if job.snapshot().active:
            return []
        return self._prune(self.keep, self.max_bytes)

    def _prune(self, keep: int, max_bytes: int) -> list[str]:
        try:
            with self._lock:
                removed = prune(self.folder, keep, max_bytes)
        except OSError as e:  # a read-only folder: the runs stay, the app goes on
            log.warning("could not remove old visitor runs: %s", e)
            return []
        if removed:
            log.info("removed %d old visitor run(s): %s", len(removed), ", ".join(removed))
        return removed
