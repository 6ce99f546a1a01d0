"""The app through its public API (gradio_client) on a fresh clone's first start without the dataset or a
network: the default demo checkpoint and the embedded CIFAR-10 sample only (`offline_app`); and a server
without any checkpoint that plays a Space with an admin secret (`empty_app`).
"""
import os

import numpy as np
import pytest
from app_fixtures import (  # noqa: F401
    CLASSES,
    KNOBS,
    MAP_POINTS,
    NO_NETWORK,
    demo_pair,
    expected_query,
    map_positions,
    offline_app,
    offline_env,
    plot_data,
    poll,
    start_app,
)
from PIL import Image

from vicreg.core.presets import DEFAULT_MODEL
from vicreg.runfiles.checkpoint import read_meta
from vicreg.training.data import read_packed

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402


def test_offline_first_start(offline_app, demo_pair, tmp_path):  # noqa: F811
    print(f"\noffline app start to serving: {offline_app.start_seconds:.1f}s")
    c = Client(offline_app.url, verbose=False)
    upd = c.predict(checkpoint=None, api_name="/checkpoints")
    assert upd["value"] == demo_pair[0] and len(upd["choices"]) == 1
    # the stored report, at once
    summary, per_class, confusion, result = c.predict(checkpoint=demo_pair[0], api_name="/evaluation_stored")
    rep = read_meta(demo_pair[0])["report"]
    assert result["results"][DEFAULT_MODEL]["linear_top1"] == rep["linear_top1"] and result["stored"] is True
    assert result["results"]["random init"]["knn_top1"] == rep["baseline"]["knn_top1"]
    assert f"| {DEFAULT_MODEL} | **{100 * rep['linear_top1']:.1f}%** |" in summary
    # the sample's map, at once
    z = read_packed(demo_pair[1])
    umap, test_x, features = z["umap"], z["test_x"], z["features"].astype(np.float32)
    status, plot, info = c.predict(checkpoint=demo_pair[0], api_name="/umap_preview")
    pos = map_positions(plot_data(plot))
    assert info["points"] == len(pos) == len(umap) >= 1000 and pos[11] == tuple(np.round(umap[11], 3).tolist())
    # an upload finds its neighbours among the sample's test images
    f = tmp_path / "sample_11.png"
    Image.fromarray(test_x[11].transpose(1, 2, 0)).save(f)
    out = c.predict(image=handle_file(str(f)), checkpoint=demo_pair[0], api_name="/explore_upload")
    order, sims = expected_query(features / np.linalg.norm(features, axis=1, keepdims=True),
                                 np.asarray(out[10]["embedding"], dtype=np.float32))
    assert [n["index"] for n in out[10]["neighbours"]] == order[:8].tolist() and order[0] == 11
    assert out[10]["map_xy"] is not None and out[10]["prediction"] in CLASSES
    # evaluating needs the dataset: the page says how to get it
    assert c.predict(checkpoint=demo_pair[0], n_train=100, n_test=100, probe_epochs=5, api_name="/evaluate")[0] \
        .startswith("⚠️ Evaluating a checkpoint needs the full CIFAR-10 dataset")
    log = offline_app.tail(10**7)
    assert "Traceback" not in log and "numba" not in log, log[-3000:]


def test_offline_quick_demo_trains_on_the_sample(offline_app):  # noqa: F811
    c = Client(offline_app.url, verbose=False)
    knobs = {**KNOBS, "name": "quick_demo", "batch_size": 64, "train_subset": 2000, "knn_train": 1000, "knn_test": 250}
    text = c.predict(**knobs, api_name="/train_start")
    assert text == ("✅ run 1 started on the embedded 2,000-image CIFAR-10 sample (the full dataset is not available "
                    "here): saving to checkpoint <code>quick_demo</code>")
    info, _ = poll(c, lambda i: i["status"] == "running" and i["step"] >= 1, timeout=150)
    assert (info["n_train"], info["total_steps"]) == (2000, 2 * (2000 // 64))
    c.predict(secret="", api_name="/train_stop")
    info, _ = poll(c, lambda i: not i["active"], timeout=90)
    assert info["status"] == "stopped" and os.path.dirname(info["end"]["checkpoint"]) == \
        os.path.join(offline_app.folder, "checkpoints")


@pytest.fixture(scope="module")
def empty_app(tmp_path_factory, cifar_root):
    cache = str(tmp_path_factory.mktemp("cache_empty"))
    env = {"VICREG_CHECKPOINTS": str(tmp_path_factory.mktemp("no_checkpoints")), "VICREG_CACHE": cache,
           "VICREG_DATA": cifar_root, "VICREG_MAP_POINTS": str(MAP_POINTS), "VICREG_APP_THREADS": "1",
           "VICREG_DEFAULT_CHECKPOINT": str(tmp_path_factory.mktemp("none") / "missing.safetensors"),
           "VICREG_ADMIN_TOKEN": "let-me-in", **NO_NETWORK}  # this server also plays a Space with an admin secret
    app = start_app(env, str(tmp_path_factory.mktemp("logs_empty") / "app.log"))
    yield app
    app.stop()


def test_without_checkpoints_tabs_say_so(empty_app):
    c = Client(empty_app.url, verbose=False)
    upd = c.predict(checkpoint=None, api_name="/checkpoints")
    assert upd["choices"] == [] and upd["value"] is None
    status, plot, info = c.predict(checkpoint=None, api_name="/umap")
    assert status == "⚠️ No trained checkpoint yet, so there is no meaningful map to show." and plot is None
    out = c.predict(index=3, checkpoint=None, api_name="/explore_test_image")
    assert "No trained checkpoint" in out[0] and Image.open(out[2]).size == Image.open(out[4]).size == (160, 160)
    assert out[10]["neighbours"] == [] and out[7] == {} and out[8] is None  # no guess, no map
    summary, _, _, result = c.predict(checkpoint=None, n_train=200, n_test=100, probe_epochs=3, api_name="/evaluate")
    assert list(result["results"]) == ["random init"] and "only the random baseline" in summary


def test_public_demo_rules_hold_through_the_api(empty_app):
    """The same rules as the page's (services/access.py), for anyone calling the API directly."""
    a, b = Client(empty_app.url, verbose=False), Client(empty_app.url, verbose=False)
    big = a.predict(**{**KNOBS, "epochs": 50, "train_subset": 0}, api_name="/train_start")
    assert big.startswith("❌ On this shared server a visitor&#x27;s run may be at most the size of the 10-minute CPU "
                          "demo")
    assert a.predict(**{**KNOBS, "secret": "guess"}, api_name="/train_start") == "❌ Wrong admin secret."
    assert a.predict(secret="guess", api_name="/train_stop") == "❌ Wrong admin secret."
    info = a.predict(checkpoint=None, resume_checkpoint=None, api_name="/train_status")[5]
    assert info["run_id"] == 0 and info["status"] == "idle" and "owner" not in info  # nothing started
    assert a.predict(**{**KNOBS, "epochs": 3}, api_name="/train_start").startswith("✅ run 1 started")
    poll(a, lambda i: i["status"] == "running")
    assert b.predict(secret="", api_name="/train_stop").startswith("⚠️ Only the visitor who started this run")
    assert a.predict(secret="", api_name="/train_stop").startswith("✅ stopping after the current step")
    info, _ = poll(b, lambda i: not i["active"], timeout=90)
    assert info["status"] == "stopped"
    resumed = b.predict(checkpoint=info["end"]["checkpoint"], more_epochs=1, threads=1, device="cpu", secret="",
                        api_name="/train_resume")
    assert resumed.startswith("❌ On this shared server only the admin may resume training")
    hub = a.predict(repo_id="someone/vicreg-cifar10", filename="", secret="", api_name="/hub_load")[0]
    assert hub == ("❌ On this shared server only the admin may download checkpoints from the Hub; enter the admin "
                   "secret in the &#x27;Admin secret&#x27; box at the top of the page.")
    hub = a.predict(repo_id="someone/vicreg-cifar10", filename="", secret="let-me-in",
                    api_name="/hub_load")[0]
    assert hub == "❌ the Hugging Face Hub cannot be reached from this server (offline?)"  # past the gate
    assert a.predict(secret="", api_name="/download_data").startswith(
        "❌ On this shared server only the admin may download CIFAR-10")
    # the admin may start anything: a run that fails fast (too few images for the batch) reports its failure
    ok = b.predict(**{**KNOBS, "train_subset": 8, "secret": "let-me-in"}, api_name="/train_start")
    assert ok.startswith("✅ run 2 started")
    info, _ = poll(b, lambda i: i["status"] == "failed", timeout=60)
    assert info["end"]["reason"] == "ValueError: batch size 16 is larger than the 8 training images"


def test_a_taken_port_starts_the_app_again(tmp_path, demo_pair, monkeypatch):  # noqa: F811
    """Between asking for a free port and the app binding it, another process can take the port (a parallel
    test worker did): the harness starts the app again on a new port instead of failing."""
    import socket

    import bench.harness as harness

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    taken_port, given = taken.getsockname()[1], []
    real = harness.free_port
    monkeypatch.setattr(harness, "free_port", lambda: given.append(taken_port if not given else real()) or given[-1])
    try:
        app = harness.AppProcess(offline_env(str(tmp_path), demo_pair), str(tmp_path / "app.log"))
    finally:
        taken.close()
    try:
        assert len(given) == 2 and app.port == given[1] != taken_port
        assert Client(app.url, verbose=False).predict(checkpoint=None, api_name="/checkpoints")["value"] == demo_pair[0]
    finally:
        app.stop()
