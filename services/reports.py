"""Evaluation reports (vicreg.runfiles.report.EvalReport): the one stored in a checkpoint's metadata (the shipped
model carries its own, beside its random-initialised baseline), and kNN + linear probe runs on the full
dataset, cached on disk as JSON under <cache>/eval/<checkpoint-key>-<data>-<n_train>-<n_test>-<epochs>-<precision>.json.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading

import torch

from vicreg.runfiles.checkpoint import read_meta
from vicreg.runfiles.files import atomic_write_text
from vicreg.runfiles.progress import Progress, noop
from vicreg.runfiles.report import EvalReport
from vicreg.training.data import even_subset
from vicreg.training.evaluate import evaluate_backbone

from .features.data import DataSource
from .features.models import ModelCache, model_key


def stored_report(path: str) -> tuple[EvalReport, EvalReport | None] | None:
    """(the checkpoint's report, its random baseline's or None) from the checkpoint's metadata, or
    None when it carries none. Raises CheckpointError for an unreadable checkpoint."""
    stored = read_meta(path).get("report")
    rep = EvalReport.from_dict(stored)
    return None if rep is None else (rep, EvalReport.from_dict(stored.get("baseline")))


class ReportStore:
    def __init__(self, models: ModelCache, data: DataSource, cache_dir: str, heavy: threading.Lock):
        self.models, self.data, self.cache_dir, self.heavy = models, data, cache_dir, heavy

    def _file(self, path: str | None, n_train: int, n_test: int, epochs: int) -> str:
        prec = "bf16" if self.models.rt.bf16 else "fp32"
        data = hashlib.sha1(os.path.abspath(self.data.root).encode()).hexdigest()[:8]
        name = f"{model_key(path)}-{data}-{n_train}-{n_test}-{epochs}-{prec}.json"
        return os.path.join(self.cache_dir, "eval", name)

    def cached(self, path: str | None, n_train: int, n_test: int, epochs: int) -> EvalReport | None:
        try:
            with open(self._file(path, n_train, n_test, epochs)) as f:
                return EvalReport.from_dict(json.load(f))
        except (OSError, ValueError):
            return None

    def evaluate(self, path: str | None, n_train: int, n_test: int, epochs: int = 100,
                 progress: Progress | None = None) -> EvalReport:
        """kNN + linear probe on evenly spaced subsets of the full dataset (0 = all); path None =
        the random-init baseline. Cached on disk, so the baseline is computed once per size."""
        progress = progress or noop
        hit = self.cached(path, n_train, n_test, epochs)
        if hit is not None:
            return hit
        with self.heavy:
            hit = self.cached(path, n_train, n_test, epochs)
            if hit is not None:
                return hit
            torch.set_num_threads(self.models.threads)
            progress(0.0, "loading CIFAR-10")
            data = self.data.dataset(self.data.root)  # DataError when the full dataset is absent
            tr, _ = even_subset(data.train, n_train)
            te, _ = even_subset(data.test, n_test)
            model, cfg = self.models.get(path)
            rep = evaluate_backbone(model.backbone, tr.images, tr.labels, te.images, te.labels, data.classes,
                                    self.models.rt, cfg.augment, probe_epochs=epochs, progress=progress)
            atomic_write_text(self._file(path, n_train, n_test, epochs), json.dumps(rep.to_dict()))
            return rep
