"""Fixtures shared by the app tests (imported by test_app_api.py, test_browser.py and test_handlers.py).

`demo_pair`: the default (demo) checkpoint and the embedded CIFAR-10 sample: the repo's shipped files
when both exist, otherwise provisional ones built from `cifar_root` (bench/harness.py).
`trained_checkpoint`: a real checkpoint from a few training steps (ResNet-18 at width 16), in a temporary folder.
`app_server`: `python app.py` with a CIFAR-10 image folder (`cifar_root`: the embedded sample's 2,000 + 2,000
images, see conftest.py), pointed at temporary checkpoint and cache folders, so the repo's checkpoints/ is
never touched; `app_server.n_test` is the number of test images it serves. `offline_env`: the
environment of a fresh clone on a machine without the dataset or a network (no data, empty cache, empty HOME).
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from bench.harness import SHIPPED_CHECKPOINT, SHIPPED_SAMPLE, AppError, AppProcess, demo_files, make_checkpoint

MAP_POINTS = 600  # a small map keeps the UMAP fit quick in tests; the app's default is 10,000
NO_NETWORK = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": ""}  # a Hub that refuses at once
KNOBS = dict(preset="quick_demo", name="api_run", epochs=2, batch_size=16, optimizer="lars", lr=0, train_subset=320,
             inv_coeff=25, var_coeff=25, cov_coeff=1, knn_train=200, knn_test=50, warmup_epochs=0.5, views=2,
             view_size=0, threads=1, device="cpu", secret="")
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def plot_data(p) -> list[dict]:
    """Traces of a gr.Plot output as gradio_client returns it."""
    if p is None:
        return []
    plot = p["plot"] if isinstance(p, dict) and "plot" in p else p
    return json.loads(plot)["data"] if isinstance(plot, str) else plot["data"]


def map_positions(traces) -> dict[int, tuple[float, float]]:
    return {int(t.split("#")[1]): (x, y) for tr in traces if tr.get("name") != "your image"
            for x, y, t in zip(tr["x"], tr["y"], tr["text"], strict=True)}


def poll(client, until, timeout=180):
    """Call /train_status until until(info) holds; returns (info, last non-skipped loss plot)."""
    t0, loss_plot, info = time.time(), None, None
    while time.time() - t0 < timeout:
        out = client.predict(checkpoint=None, resume_checkpoint=None, api_name="/train_status")
        info = out[5]
        loss_plot = out[1] or loss_plot
        if until(info):
            return info, loss_plot
        time.sleep(0.5)
    pytest.fail(f"timed out waiting on the training job; last status {info}")


def expected_query(features, emb):
    """Index rows by cosine similarity to `emb`, best first, and the similarities (plain numpy)."""
    sims = features @ (emb / np.linalg.norm(emb))
    order = np.argsort(-sims, kind="stable")
    return order, sims


@pytest.fixture(scope="session")
def demo_pair(request) -> tuple[str, str]:
    if os.path.isfile(SHIPPED_CHECKPOINT) and os.path.isfile(SHIPPED_SAMPLE):
        return SHIPPED_CHECKPOINT, SHIPPED_SAMPLE
    t0 = time.perf_counter()
    pair = demo_files(request.getfixturevalue("cifar_root"))
    print(f"\n[fixture] provisional demo checkpoint and sample ready in {time.perf_counter() - t0:.1f}s")
    return pair


def start_app(env: dict, log_path: str) -> AppProcess:
    try:
        return AppProcess(env, log_path)
    except AppError as e:
        pytest.fail(str(e))


def offline_env(folder, demo_pair, **extra) -> dict:
    """A fresh clone's first start without the dataset or a network (folder: an empty temp folder)."""
    for d in ("home", "cache", "checkpoints"):
        os.makedirs(os.path.join(folder, d), exist_ok=True)
    ckpt, sample = demo_pair
    return {"VICREG_DATA": os.path.join(folder, "no-data-here"), "VICREG_CACHE": os.path.join(folder, "cache"),
            "HOME": os.path.join(folder, "home"), "VICREG_CHECKPOINTS": os.path.join(folder, "checkpoints"),
            "VICREG_DEFAULT_CHECKPOINT": ckpt, "VICREG_SAMPLE": sample, "VICREG_APP_THREADS": "1",
            **NO_NETWORK, **extra}


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, cifar) -> str:
    t0 = time.perf_counter()
    # ResNet-18 at a quarter of its width (128-d features): its banks of the sample embed 16 times faster
    path = make_checkpoint(cifar, str(tmp_path_factory.mktemp("checkpoints")), width=16)
    print(f"\n[fixture] trained a checkpoint (4 steps) in {time.perf_counter() - t0:.1f}s")
    return path


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, trained_checkpoint, cifar_root, demo_pair):
    cache = str(tmp_path_factory.mktemp("cache"))
    env = {"VICREG_CHECKPOINTS": os.path.dirname(trained_checkpoint), "VICREG_CACHE": cache,
           "VICREG_DATA": cifar_root, "VICREG_MAP_POINTS": str(MAP_POINTS), "VICREG_APP_THREADS": "1",
           "VICREG_DEFAULT_CHECKPOINT": demo_pair[0], "VICREG_SAMPLE": demo_pair[1], **NO_NETWORK}
    app = start_app(env, str(tmp_path_factory.mktemp("logs") / "app.log"))
    print(f"\n[fixture] app start to serving: {app.start_seconds:.1f}s")
    app.checkpoint, app.default, app.cache = trained_checkpoint, demo_pair[0], cache
    app.n_test = sum(len(os.listdir(d.path)) for d in os.scandir(os.path.join(cifar_root, "test")))
    yield app
    app.stop()


@pytest.fixture(scope="module")
def offline_app(tmp_path_factory, demo_pair):
    folder = str(tmp_path_factory.mktemp("offline"))
    app = start_app(offline_env(folder, demo_pair), os.path.join(folder, "app.log"))
    print(f"\n[fixture] offline app start to serving: {app.start_seconds:.1f}s")
    app.default, app.sample, app.folder = demo_pair[0], demo_pair[1], folder
    yield app
    app.stop()
