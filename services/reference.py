"""The grey curves behind the Train tab's live ones: what this run is compared with.

The previous run of this server (whatever its recipe: set the variance weight to 0 after a healthy run and
the two read on one chart), or, before there is one, a shipped run of the same preset
(`assets/reference/<preset>.metrics.jsonl`, a metrics file as training writes it).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

from vicreg.core.config import TrainConfig
from vicreg.core.presets import PRESETS
from vicreg.orchestration.jobs import JobSnapshot
from vicreg.orchestration.launch import event
from vicreg.runfiles.checkpoint import NOT_RECIPE
from vicreg.runfiles.events import EpochEvent, StepEvent, WatchEvent
from vicreg.runfiles.metrics import read_metrics

from .settings import ROOT

FOLDER = os.path.join(ROOT, "assets", "reference")


@dataclass
class Reference:
    label: str
    steps: list[StepEvent] = field(default_factory=list)
    epochs: list[EpochEvent] = field(default_factory=list)
    watches: list[WatchEvent] = field(default_factory=list)


def _recipe(config: dict) -> dict:
    """The fields that make a recipe: not the run's own, and not the epochs a time budget fitted to this CPU."""
    d = TrainConfig.from_dict(config).to_dict()
    return {k: v for k, v in d.items() if k not in NOT_RECIPE and not (k == "epochs" and d["budget_s"])}


@functools.cache
def _preset_recipes() -> tuple[tuple[str, dict], ...]:
    return tuple((p, _recipe(TrainConfig.from_preset(p).to_dict())) for p in PRESETS)


def preset_of(config: dict) -> str | None:
    """The preset whose recipe this run's config is, if any."""
    mine = _recipe(config)
    return next((p for p, recipe in _preset_recipes() if recipe == mine), None)


def shipped(preset: str, folder: str = FOLDER) -> Reference | None:
    path = os.path.join(folder, f"{preset}.metrics.jsonl")
    if not os.path.isfile(path):
        return None
    return _read(path, os.path.getmtime(path), preset)


@functools.lru_cache(maxsize=8)  # a shipped file is read once (per change), not at every poll of the Train tab
def _read(path: str, _mtime: float, preset: str) -> Reference:
    records = read_metrics(path)
    # a metrics file appends every run trained under its name: the reference is the last one started afresh
    # (with any resumes after it), never two runs' curves drawn as one
    fresh = [i for i, d in enumerate(records) if d.get("kind") == "start" and not d.get("start_step")]
    events = [event(d) for d in records[fresh[-1] if fresh else 0:]]
    return Reference(f"a finished {preset} run", [e for e in events if isinstance(e, StepEvent)],
                     [e for e in events if isinstance(e, EpochEvent)], [e for e in events if isinstance(e, WatchEvent)])


def reference_for(snap: JobSnapshot, folder: str = FOLDER) -> Reference | None:
    """The previous run of this server if it trained at all, else the shipped run of this run's preset."""
    prev = snap.previous
    if prev is not None and prev.steps:
        name = prev.start.run if prev.start else "?"
        return Reference(f"the previous run ({name})", prev.steps, prev.epochs, prev.watches)
    preset = preset_of(snap.start.config) if snap.start else None
    return shipped(preset, folder) if preset else None
