"""The checkpoints a visitor can pick: the default (shipped) model first, then the checkpoint folder's
files, newest first. Only paths from this list are ever opened on a visitor's request.

The rule for the app and its API: a checkpoint path a client sends is used only if it is exactly one
of the listed paths, and the list holds the default model plus the folder's files whose real path
(symlinks followed) is inside the folder, so a link placed in the folder cannot lead a visitor to a
file elsewhere. Run names a visitor types go through vicreg.runfiles.names.safe_name / checkpoint_path."""
from __future__ import annotations

import os

from vicreg.runfiles.checkpoint import list_checkpoints, read_meta
from vicreg.runfiles.names import CheckpointError, checkpoint_stem
from vicreg.runfiles.report import EvalReport


def checkpoint_label(path: str, meta: dict, default: bool = False) -> str:
    cfg = meta.get("config", {})
    part = " (mid-epoch)" if meta.get("step_in_epoch") else ""
    label = f"{checkpoint_stem(path)} · epoch {meta.get('epoch', '?')}/{cfg.get('epochs', '?')}{part}"
    report = EvalReport.from_dict(meta.get("report"))
    knn = (meta.get("metrics") or {}).get("knn_top1")
    if report is not None:
        label += f" · linear probe {100 * report.linear_top1:.1f}%"
    elif knn is not None:
        label += f" · kNN {100 * knn:.1f}%"
    return label + (" · default" if default else "")


class Catalog:
    def __init__(self, checkpoint_dir: str, default: str | None):
        self.checkpoint_dir, self.default_path = checkpoint_dir, default

    def default(self) -> str | None:
        """The default checkpoint when it is there and readable."""
        if not self.default_path or not os.path.isfile(self.default_path):
            return None
        try:
            read_meta(self.default_path)
        except CheckpointError:
            return None
        return self.default_path

    def choices(self) -> list[tuple[str, str]]:
        """(label, path): the default first, then every readable checkpoint in the folder, newest first."""
        out, seen = [], set()
        default = self.default()
        if default:
            out.append((checkpoint_label(default, read_meta(default), default=True), default))
            seen.add(os.path.realpath(default))
        for path, meta in list_checkpoints(self.checkpoint_dir):  # links out of the folder are skipped
            if os.path.realpath(path) not in seen:
                out.append((checkpoint_label(path, meta), path))
        return out

    def valid(self, path: str | None) -> str | None:
        """The path if it is one of the listed checkpoints (never an arbitrary file a client sends)."""
        if not path:
            return None
        return path if path in {p for _, p in self.choices()} else None

    def preferred(self, current: str | None, choices: list[tuple[str, str]] | None = None) -> str | None:
        """`current` while it is listed, else the default, else the newest."""
        paths = [p for _, p in (self.choices() if choices is None else choices)]
        return current if current in paths else (paths[0] if paths else None)
