"""Fixtures shared by the app tests (imported by test_app_api.py and test_browser.py).

`trained_checkpoint`: a real checkpoint from a few training steps, in a temporary folder.
`app_server`: `python app.py` in a subprocess on a free port, pointed at temporary checkpoint and
cache folders (VICREG_CHECKPOINTS / VICREG_CACHE), so the repo's checkpoints/ is never touched.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAP_POINTS = 600  # a small map keeps the UMAP fit quick in tests; the app's default is 10,000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_checkpoint(cifar, folder: str, name: str = "tiny") -> str:
    import torch

    from vicreg.config import ModelConfig, TrainConfig
    from vicreg.train import train

    # 4 real steps; a narrower projector keeps the file (and the step) small; the backbone is the real one
    # threads=1: on a CPU shared with other jobs, 2 OpenMP threads per process can be 10x slower
    cfg = TrainConfig(epochs=1, batch_size=16, train_subset=64, knn_test=0, checkpoint_dir=folder, name=name, seed=0,
                      model=ModelConfig(projector="512-512"), threads=1)
    before = torch.get_num_threads()
    try:
        end = list(train(cfg, data=cifar))[-1]
    finally:
        torch.set_num_threads(before)  # train() set it for this (pytest's) thread
    assert end.status == "finished", end.reason
    return end.checkpoint


def share_dataset_cache(cifar_root: str, cache: str) -> None:
    """Link the already-decoded dataset cache into a fresh cache folder (saves ~a minute of JPEG decoding)."""
    from vicreg.data import cache_path

    try:
        src = cache_path(cifar_root, 32)
    except OSError:
        return
    key = os.path.basename(src)
    if os.path.exists(src) and not os.path.exists(os.path.join(cache, key)):
        os.makedirs(cache, exist_ok=True)
        os.symlink(os.path.abspath(src), os.path.join(cache, key))


class AppProcess:
    def __init__(self, env: dict, log_path: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        full = {**os.environ, **env, "PORT": str(self.port), "GRADIO_SERVER_NAME": "127.0.0.1",
                "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": ROOT}
        self.t0 = time.perf_counter()
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "app.py")], cwd=ROOT, env=full,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.start_seconds = self._wait()

    def _wait(self, timeout: float = 60) -> float:
        while time.perf_counter() - self.t0 < timeout:
            if self.proc.poll() is not None:
                pytest.fail(f"app exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.t0
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"app did not serve within {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()[-n:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, cifar) -> str:
    t0 = time.perf_counter()
    path = make_checkpoint(cifar, str(tmp_path_factory.mktemp("checkpoints")))
    print(f"\n[fixture] trained a checkpoint (4 steps) in {time.perf_counter() - t0:.1f}s")
    return path


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, trained_checkpoint, cifar_root):
    cache = str(tmp_path_factory.mktemp("cache"))
    share_dataset_cache(cifar_root, cache)
    env = {"VICREG_CHECKPOINTS": os.path.dirname(trained_checkpoint), "VICREG_CACHE": cache,
           "VICREG_DATA": cifar_root, "VICREG_MAP_POINTS": str(MAP_POINTS), "VICREG_APP_THREADS": "1"}
    app = AppProcess(env, str(tmp_path_factory.mktemp("logs") / "app.log"))
    print(f"\n[fixture] app start to serving: {app.start_seconds:.1f}s")
    app.checkpoint = trained_checkpoint
    app.cache = cache
    yield app
    app.stop()
