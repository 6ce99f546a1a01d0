"""The app through its public API: `python app.py` in a subprocess, driven with gradio_client.

Uses a tiny checkpoint made by a few real training steps, temporary checkpoint/cache folders, a
600-point map (VICREG_MAP_POINTS) and tiny training/evaluation subsets so the file stays quick.
"""
import io
import json
import os
import sys
import time

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from app_fixtures import MAP_POINTS, app_server, trained_checkpoint  # noqa: E402,F401

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

KNOBS = dict(name="api_run", epochs=2, batch_size=16, optimizer="lars", lr=0, train_subset=320, inv_weight=25,
             var_weight=25, cov_weight=1, knn_train=200, knn_test=50, warmup_epochs=0.5, threads=1, device="cpu", secret="")


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server.url, verbose=False)


def plot_data(p) -> list[dict]:
    """Traces of a gr.Plot output as gradio_client returns it."""
    if p is None:
        return []
    plot = p["plot"] if isinstance(p, dict) and "plot" in p else p
    return json.loads(plot)["data"] if isinstance(plot, str) else plot["data"]


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


def test_app_starts_fast_and_lists_checkpoint(app_server, client):
    print(f"\napp start to serving: {app_server.start_seconds:.1f}s")
    assert app_server.start_seconds < 30  # target <= 10 s on an idle machine; CI machines are noisier
    upd = client.predict(checkpoint=None, api_name="/checkpoints")
    assert upd["value"] == app_server.checkpoint
    assert any("tiny · epoch 1/1" in label for label, _ in upd["choices"])
    assert "/train_start" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]


def test_train_start_poll_stop_resume(client, app_server):
    msg = client.predict(**KNOBS, api_name="/train_start")
    assert "run 1 started" in msg, msg
    again = client.predict(**KNOBS, api_name="/train_start")  # one job at a time
    assert "Not started" in again and "already in progress" in again
    info, loss_plot = poll(client, lambda i: i["status"] == "running" and i["n_steps_logged"] >= 3)
    assert info["total_steps"] == 2 * (320 // 16) and np.isfinite(info["loss"]) and info["pairs_per_s"] > 0
    assert info["eta_s"] is not None and info["eta_s"] > 0
    traces = plot_data(loss_plot)
    assert len(traces) == 4 and len(traces[0]["x"]) >= 3  # total + three terms
    assert "stopping" in client.predict(secret="", api_name="/train_stop")
    info, _ = poll(client, lambda i: i["status"] == "stopped", timeout=60)
    ckpt = info["end"]["checkpoint"]
    assert ckpt.endswith("api_run.safetensors") and os.path.exists(ckpt)
    assert "no training run" in client.predict(secret="", api_name="/train_stop")
    # resume continues from the stopped step
    step = info["end"]["reason"]
    msg = client.predict(checkpoint=ckpt, epochs=2, threads=1, device="cpu", secret="", api_name="/train_resume")
    assert "run 2 started" in msg and "resuming api_run" in msg, (msg, step)
    info2, _ = poll(client, lambda i: i["run_id"] == 2 and i["status"] == "running" and i["step"] > info["step"])
    assert info2["step"] > info["step"]
    client.predict(secret="", api_name="/train_stop")
    poll(client, lambda i: not i["active"], timeout=60)
    bad = client.predict(**{**KNOBS, "name": "../escape"}, api_name="/train_start")
    assert "Cannot start" in bad and "invalid checkpoint name" in bad
    with pytest.raises(Exception, match="less than minimum"):  # gradio validates the number box itself
        client.predict(**{**KNOBS, "batch_size": 1}, api_name="/train_start")


def test_simultaneous_starts_make_one_job(client, app_server):
    import threading

    poll(client, lambda i: not i["active"], timeout=60)
    barrier, replies = threading.Barrier(2), []

    def start():
        c = Client(app_server.url, verbose=False)  # two independent visitors
        barrier.wait()
        replies.append(c.predict(**{**KNOBS, "name": "twin"}, api_name="/train_start"))

    threads = [threading.Thread(target=start) for _ in range(2)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    started = [r for r in replies if "started" in r and "Not started" not in r]
    refused = [r for r in replies if "already in progress" in r]
    assert len(started) == 1 and len(refused) == 1, replies
    info, _ = poll(client, lambda i: i["active"], timeout=60)
    run_id = info["run_id"]
    client.predict(secret="", api_name="/train_stop")
    info, _ = poll(client, lambda i: not i["active"], timeout=90)
    assert info["run_id"] == run_id  # still the one run


def test_admin_secret(monkeypatch):
    from ui.common import admin_error

    monkeypatch.delenv("VICREG_ADMIN_TOKEN", raising=False)
    assert admin_error(None) is None
    monkeypatch.setenv("VICREG_ADMIN_TOKEN", "s3cret")
    assert "requires the admin secret" in admin_error("")
    assert admin_error("wrong") == "Wrong admin secret."
    assert admin_error("s3cret") is None


def test_evaluate_with_random_baseline(client, app_server):
    t0 = time.time()
    summary, per_class, confusion, result = client.predict(checkpoint=app_server.checkpoint, n_train=300, n_test=100,
                                                           probe_epochs=5, api_name="/evaluate")
    first = time.time() - t0
    res = result["results"]
    assert list(res) == ["tiny", "random init"]
    for r in res.values():
        assert 0.0 <= r["linear_top1"] <= 1.0 and 0.0 <= r["knn_top1"] <= 1.0
        assert len(r["per_class"]) == 10 and r["n_train"] == 300 and r["n_test"] == 100
        assert np.asarray(r["confusion"]).shape == (10, 10) and np.asarray(r["confusion"]).sum() == 100
    assert "linear probe top-1" in summary and "random init" in summary
    assert len(plot_data(per_class)) == 2 and len(plot_data(confusion)) == 2
    t0 = time.time()
    again = client.predict(checkpoint=app_server.checkpoint, n_train=300, n_test=100, probe_epochs=5, api_name="/evaluate")[3]
    assert again["results"] == res  # cached: identical, and fast
    assert time.time() - t0 < max(2.0, first / 3)


def test_explore_cifar_upload(client, app_server, cifar_root):
    # test index 0 is in the (evenly spaced) map subset, so the image must find itself
    first_class = sorted(os.listdir(os.path.join(cifar_root, "test")))[0]
    f = os.path.join(cifar_root, "test", first_class, sorted(os.listdir(os.path.join(cifar_root, "test", first_class)))[0])
    out = client.predict(image=handle_file(f), checkpoint=app_server.checkpoint, api_name="/explore_upload")
    status, original, v1, p1, v2, p2, emb, guess, mapimg, nbrs, info, d1, d2 = out
    assert "crop at" in d1 and "flip" in d2
    assert "uploaded" in status and info["notes"] == []
    for img in (original, v1, v2, emb):
        assert os.path.exists(img)
    assert Image.open(original).size == (160, 160)
    assert {"crop_xywh", "flip", "grayscale", "solarize"} <= set(p1) and p1 == info["views"][0] and p2 == info["views"][1]
    n = info["neighbours"]
    assert len(n) == 8 and len(nbrs) == 8
    assert n[0]["index"] == 0 and n[0]["similarity"] > 0.999  # itself
    sims = [x["similarity"] for x in n]
    assert sims == sorted(sims, reverse=True) and all(-1 <= s <= 1.0001 for s in sims)
    classes = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
    assert all(x["class"] in classes for x in n) and nbrs[0]["caption"].startswith(n[0]["class"])
    assert abs(sum(info["guess"].values()) - 1) < 1e-6 and info["prediction"] == guess["label"]
    assert info["embedding_dim"] == 512
    # new views for the same visitor's image
    st, w1, q1, w2, q2, e1, e2 = client.predict(checkpoint=app_server.checkpoint, api_name="/explore_views")
    assert os.path.exists(w1) and "crop_xywh" in q1 and (q1, q2) != (p1, p2)


def test_umap_and_projection(client, app_server):
    t0 = time.time()
    status, plot, info = client.predict(checkpoint=app_server.checkpoint, api_name="/umap")
    print(f"\nUMAP of {MAP_POINTS} points (cold, incl. child process start): {time.time() - t0:.1f}s")
    assert info["points"] == MAP_POINTS and len(info["classes"]) == 10
    traces = plot_data(plot)
    assert sum(len(t["x"]) for t in traces if t.get("name") != "your image") == MAP_POINTS
    assert "test #" in traces[0]["text"][0]
    # now an explored image gets a map position near its neighbours
    out = client.predict(index=1234, checkpoint=app_server.checkpoint, api_name="/explore_test_image")
    info = out[10]
    assert info["map_xy"] is not None and os.path.exists(out[8])
    pos = {}
    for t in traces:
        for x, y, txt in zip(t["x"], t["y"], t.get("text", [])):
            pos[int(txt.split("#")[1])] = (x, y)
    near = np.array([pos[n["index"]] for n in info["neighbours"]])
    assert (np.array(info["map_xy"]) >= near.min(0) - 1e-3).all() and (np.array(info["map_xy"]) <= near.max(0) + 1e-3).all()
    assert 1234 not in [n["index"] for n in info["neighbours"]]  # leave-one-out for test images
    status, plot, info2 = client.predict(checkpoint=app_server.checkpoint, api_name="/umap")
    assert info2["cached"] and info2["marker"]["label"] == "test #1234"
    assert any(t.get("name") == "your image" for t in plot_data(plot))


def _enc(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def test_bad_inputs_get_messages(client, app_server, tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    frames = [Image.new("RGB", (40, 40), c) for c in ("red", "blue", "green")]
    cases = {  # file name: (bytes, expected text in status or notes, refused?)
        "not_an_image.png": (b"hello, I am text", "not an image", True),
        "truncated.jpg": (_enc(rgb.resize((256, 256)), "JPEG")[:2000], "truncated", True),
        "bomb.png": (_enc(Image.new("1", (12000, 12000)), "PNG"), "too large", True),
        "gray.png": (_enc(rgb.convert("L"), "PNG"), "grayscale", False),
        "rgba.png": (_enc(rgb.convert("RGBA"), "PNG"), "RGBA", False),
        "cmyk.jpg": (_enc(rgb.convert("CMYK"), "JPEG"), "CMYK", False),
        "deep.png": (_enc(Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)), "PNG"), "16-bit", False),
        "anim.gif": (_enc(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50), "first of 3 frames", False),
    }
    for name, (data, expect, refused) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        out = client.predict(image=handle_file(str(p)), checkpoint=app_server.checkpoint, api_name="/explore_upload")
        if refused:
            assert "cannot be used" in out[0] and expect in out[0], (name, out[0])
            assert "Traceback" not in out[0]
        else:
            assert expect in out[0] and len(out[10]["neighbours"]) == 8, (name, out[0])
    # a file type the upload box does not accept
    p = tmp_path / "notes.txt"
    p.write_text("plain text")
    with pytest.raises(Exception, match="Invalid file type"):
        client.predict(image=handle_file(str(p)), checkpoint=app_server.checkpoint, api_name="/explore_upload")
    # over the upload size limit (launch(max_file_size=20 MB))
    p = tmp_path / "huge.png"
    p.write_bytes(b"\x89PNG" + os.urandom(21 * 1024 * 1024))
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict(image=handle_file(str(p)), checkpoint=app_server.checkpoint, api_name="/explore_upload")
    # out-of-range test index, and the app still serves afterwards
    assert "run from 0 to 9999" in client.predict(index=10**6, checkpoint=app_server.checkpoint, api_name="/explore_test_image")[0]
    out = client.predict(index=3, checkpoint=app_server.checkpoint, api_name="/explore_test_image")
    assert len(out[10]["neighbours"]) == 8
    assert app_server.proc.poll() is None
    log = app_server.tail(10**7)  # gradio logs its own input-validation errors; nothing else may fail
    assert log.count("Traceback") == log.count("gradio.exceptions.Error:"), log[-3000:]


def test_visitors_do_not_share_images(app_server):
    a, b = Client(app_server.url, verbose=False), Client(app_server.url, verbose=False)
    a.predict(index=5, checkpoint=app_server.checkpoint, api_name="/explore_test_image")
    b.predict(index=7, checkpoint=app_server.checkpoint, api_name="/explore_test_image")
    assert a.predict(checkpoint=app_server.checkpoint, api_name="/umap")[2]["marker"]["label"] == "test #5"
    assert b.predict(checkpoint=app_server.checkpoint, api_name="/umap")[2]["marker"]["label"] == "test #7"
    fresh = Client(app_server.url, verbose=False)
    assert fresh.predict(checkpoint=app_server.checkpoint, api_name="/umap")[2]["marker"] is None
    assert "Upload or pick an image first" in fresh.predict(checkpoint=app_server.checkpoint, api_name="/explore_views")[0]


def test_hub_load_gives_a_message(client):
    assert "not a Hub repo id" in client.predict(repo_id="not a repo", filename="", checkpoint=None, api_name="/hub_load")[0]
    text = client.predict(repo_id="vicreg-studio-tests/does-not-exist", filename="", checkpoint=None, api_name="/hub_load")[0]
    assert "cannot be reached" in text or "could not download" in text or "disabled" in text, text


@pytest.fixture(scope="module")
def empty_app(tmp_path_factory, cifar_root):
    from app_fixtures import AppProcess, share_dataset_cache

    cache = str(tmp_path_factory.mktemp("cache_empty"))
    share_dataset_cache(cifar_root, cache)
    env = {"VICREG_CHECKPOINTS": str(tmp_path_factory.mktemp("no_checkpoints")), "VICREG_CACHE": cache,
           "VICREG_DATA": cifar_root, "VICREG_MAP_POINTS": str(MAP_POINTS), "VICREG_APP_THREADS": "1",
           "VICREG_ADMIN_TOKEN": "let-me-in"}  # this server also plays a Space with an admin secret
    app = AppProcess(env, str(tmp_path_factory.mktemp("logs_empty") / "app.log"))
    yield app
    app.stop()


def test_without_checkpoints_tabs_say_so(empty_app):
    c = Client(empty_app.url, verbose=False)
    assert c.predict(checkpoint=None, api_name="/checkpoints")["value"] is None
    status, plot, info = c.predict(checkpoint=None, api_name="/umap")
    assert "No trained checkpoint" in status and plot is None
    out = c.predict(index=3, checkpoint=None, api_name="/explore_test_image")
    assert "No trained checkpoint" in out[0] and out[2] and out[4]  # augmentations still shown
    assert out[10]["neighbours"] == [] and not out[7] and not out[8]
    summary, _, _, result = c.predict(checkpoint=None, n_train=200, n_test=100, probe_epochs=3, api_name="/evaluate")
    assert list(result["results"]) == ["random init"] and "only the random baseline" in summary


def test_admin_token_guards_training(empty_app):
    c = Client(empty_app.url, verbose=False)
    assert "requires the admin secret" in c.predict(**{**KNOBS, "secret": ""}, api_name="/train_start")
    assert "Wrong admin secret" in c.predict(**{**KNOBS, "secret": "guess"}, api_name="/train_start")
    assert "Wrong admin secret" in c.predict(secret="guess", api_name="/train_stop")
    info = c.predict(checkpoint=None, resume_checkpoint=None, api_name="/train_status")[5]
    assert info["run_id"] == 0 and info["status"] == "idle"  # nothing started
    # with the secret, a run that fails fast (too few images for the batch) starts and reports its failure
    ok = c.predict(**{**KNOBS, "train_subset": 8, "secret": "let-me-in"}, api_name="/train_start")
    assert "run 1 started" in ok
    info, _ = poll(c, lambda i: i["status"] == "failed", timeout=60)
    assert "larger than the 8 training images" in info["end"]["reason"]
