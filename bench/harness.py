"""Running the app as a visitor meets it, shared by the benchmarks and the tests (no pytest here; import it
as `bench.harness` from the repository root, where `python -m bench.…` and `python -m pytest` run).

- `AppProcess`: `python app.py` in a subprocess on a free port, with the environment it is given.
- `make_checkpoint`: a real checkpoint from a few training steps.
- `demo_files`: the shipped demo checkpoint and embedded CIFAR-10 sample when the repo has them,
  otherwise provisional ones built from a CIFAR-10 image folder (cached in the temp folder).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

from services.settings import DEFAULT_CHECKPOINT, SAMPLE
from vicreg.core.presets import DEFAULT_MODEL
from vicreg.runfiles.names import SUFFIX
from vicreg.runfiles.report import EvalReport

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_CHECKPOINT, SHIPPED_SAMPLE = DEFAULT_CHECKPOINT, SAMPLE
PROVISIONAL_VERSION = "v3"  # bump when the provisional files' layout changes


PORT_TAKEN = "Cannot find empty port"  # gradio's words when the port it was given is taken


class AppError(RuntimeError):
    """The app subprocess exited or did not serve in time; the message holds its log's tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppProcess:
    """`python app.py` with `env` added to this process's environment; waits until it serves."""

    def __init__(self, env: dict, log_path: str, args=(), timeout: float = 60, tries: int = 3):
        self.log_path = log_path
        for attempt in range(tries):
            # The free port is only free when asked: another process (a parallel test worker, an outgoing
            # connection's ephemeral port) can take it before the app binds it. Then start again on a new one.
            try:
                self._start(env, args, timeout)
                return
            except AppError as e:
                if PORT_TAKEN not in str(e) or attempt == tries - 1:
                    raise

    def environment(self, env: dict) -> dict:
        """The app's environment: this process's, `env` on top, quiet analytics, the repo importable."""
        return {**os.environ, **env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False",
                "PYTHONPATH": ROOT}

    def _start(self, env: dict, args, timeout: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        full = {**self.environment(env), "PORT": str(self.port)}
        self.t0 = time.perf_counter()
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "app.py"), *args], cwd=ROOT, env=full,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.start_seconds = self._wait(timeout)

    def _wait(self, timeout: float) -> float:
        while time.perf_counter() - self.t0 < timeout:
            if self.proc.poll() is not None:
                tail = self.tail()
                self.log.close()
                raise AppError(f"app exited with {self.proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.t0
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AppError(f"app did not serve within {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path) as f:
            return f.read()[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def make_checkpoint(data, folder: str, name: str = "tiny", steps: int = 4, width: int = 64) -> str:
    """`steps` real training steps at batch 16 with a narrow projector (the backbone ResNet-18 at `width`).
    threads=1: on a CPU shared with other jobs, 2 OpenMP threads per process can be 10x slower."""
    import torch

    from vicreg.core.config import ModelConfig, TrainConfig
    from vicreg.training.train import train

    cfg = TrainConfig(epochs=1, batch_size=16, train_subset=16 * steps, knn_test=0, checkpoint_dir=folder, name=name,
                      seed=0, model=ModelConfig(projector="512-512", width=width), threads=1)
    before = torch.get_num_threads()
    try:
        end = list(train(cfg, data=data))[-1]
    finally:
        torch.set_num_threads(before)  # train() set it for this thread
    if end.status != "finished":
        raise RuntimeError(end.reason)
    return end.checkpoint


def demo_files(cifar_root: str | None = None) -> tuple[str, str]:
    """(default checkpoint, embedded sample): the repo's shipped pair when both exist, otherwise a
    provisional pair built once from the CIFAR-10 images at `cifar_root` into the temp folder."""
    if os.path.isfile(SHIPPED_CHECKPOINT) and os.path.isfile(SHIPPED_SAMPLE):
        return SHIPPED_CHECKPOINT, SHIPPED_SAMPLE
    folder = os.path.join(tempfile.gettempdir(), f"vicreg-provisional-demo-{PROVISIONAL_VERSION}")
    ckpt, sample = os.path.join(folder, DEFAULT_MODEL + SUFFIX), os.path.join(folder, "cifar10_sample.npz")
    if not (os.path.isfile(ckpt) and os.path.isfile(sample)):
        if not cifar_root:
            raise RuntimeError("no shipped demo files and no CIFAR-10 copy to build provisional ones from")
        build_provisional(cifar_root, folder)
    return ckpt, sample


def _knn_report(feats: np.ndarray, labels: np.ndarray, classes: list[str], scale: float = 1.0) -> dict:
    """A cheap stand-in for an evaluation report: kNN of the odd rows' features against the even rows'."""
    bank, query = feats[::2], feats[1::2]
    sims = query @ bank.T
    top = np.argsort(-sims, axis=1)[:, :20]
    votes = np.zeros((len(query), len(classes)))
    for c in range(len(classes)):
        votes[:, c] = (np.exp(np.take_along_axis(sims, top, 1) / 0.1) * (labels[::2][top] == c)).sum(1)
    pred, true = votes.argmax(1), labels[1::2]
    conf = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(conf, (true, pred), 1)
    acc = float((pred == true).mean()) * scale
    per_class = (np.diag(conf) / np.maximum(conf.sum(1), 1) * scale).round(4).tolist()
    return EvalReport(linear_top1=round(acc, 4), knn_top1=round(acc * 0.9, 4), train_top1=round(min(1.0, acc * 1.2), 4),
                      per_class=per_class, confusion=conf.tolist(), classes=list(classes), n_train=len(bank),
                      n_test=len(query), probe_epochs=1, seconds=1.0).to_dict()


def build_provisional(cifar_root: str, folder: str) -> None:
    """A demo checkpoint (4 training steps, packed) and a 2,000 + 2,000 image sample with that
    checkpoint's features and a 2-D map (PCA, standing in for UMAP), laid out like the shipped ones."""
    import torch

    before = torch.get_num_threads()
    try:
        _build(cifar_root, folder)
    finally:
        torch.set_num_threads(before)  # make_runtime(threads=1) set it for this thread


def _build(cifar_root: str, folder: str) -> None:
    from vicreg.core.runtime import make_runtime
    from vicreg.runfiles.checkpoint import load_checkpoint, pack_checkpoint
    from vicreg.runfiles.files import atomic_write, file_sha256
    from vicreg.training.data import Dataset, even_subset, load_dataset
    from vicreg.training.embed import load_model
    from vicreg.training.evaluate import extract_features

    full = load_dataset(cifar_root)
    train, train_idx = even_subset(full.train, 2000)
    test, test_idx = even_subset(full.test, 2000)
    work = tempfile.mkdtemp(prefix="vicreg-provisional-")
    raw = make_checkpoint(Dataset(train, test, full.classes, "sample"), work, DEFAULT_MODEL)
    ckpt = os.path.join(folder, DEFAULT_MODEL + SUFFIX)
    provenance = {"command": "provisional test fixture (bench/harness.py)", "commit": "none", "data": "CIFAR-10",
                  "epochs": 1, "images_seen": 64, "views_seen": 128, "wall_seconds": 1.0, "hardware": "cpu",
                  "trained_at": "now"}
    pack_checkpoint(load_checkpoint(raw), ckpt, {"provenance": provenance})  # the report is added below
    rt = make_runtime("cpu", "fp32", threads=1)
    model, cfg, _ = load_model(ckpt, rt)
    feats = extract_features(model.backbone, test.images, rt, cfg.augment, batch_size=250).numpy()
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    labels = test.labels.numpy()
    report = _knn_report(feats, labels, full.classes)
    report["baseline"] = _knn_report(feats, labels, full.classes, scale=0.7)
    pack_checkpoint(load_checkpoint(raw), ckpt, {"provenance": provenance, "report": report})  # same weights
    centred = feats - feats.mean(0)
    coords = (centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T).astype(np.float32)
    arrays = dict(train_x=train.images.numpy(), train_y=train.labels.numpy(), test_x=test.images.numpy(),
                  test_y=labels, classes=np.asarray(json.dumps(list(full.classes))), test_index=test_idx,
                  train_index=train_idx, features=feats.astype(np.float16), umap=coords,
                  features_checkpoint=np.asarray(file_sha256(ckpt)))
    atomic_write(os.path.join(folder, "cifar10_sample.npz"), lambda tmp: np.savez(tmp, **arrays))
