"""The app through its public API: `python app.py` in a subprocess, driven with gradio_client.

The server has a CIFAR-10 image folder (the embedded sample's 2,000 + 2,000 images), a tiny checkpoint
made by a few real training steps beside the default demo checkpoint, and a 600-point map
(VICREG_MAP_POINTS). It never touches the network: the Hub endpoint points at a closed local port.
A first start without the dataset: test_app_offline.py.
"""
import glob
import io
import os
import re
import threading
import time

import numpy as np
import pytest
from app_fixtures import (  # noqa: F401
    CLASSES,
    KNOBS,
    MAP_POINTS,
    app_server,
    demo_pair,
    expected_query,
    map_positions,
    plot_data,
    poll,
    trained_checkpoint,
)
from PIL import Image

from vicreg.core.config import MAX_VIEWS
from vicreg.runfiles.checkpoint import read_meta

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402


@pytest.fixture(scope="module")
def client(app_server):  # noqa: F811
    return Client(app_server.url, verbose=False)


def test_app_starts_fast_and_lists_checkpoints(app_server, client):  # noqa: F811
    print(f"\napp start to serving: {app_server.start_seconds:.1f}s")
    assert app_server.start_seconds < 30  # target <= 10 s on an idle machine; CI machines are noisier
    upd = client.predict(checkpoint=None, api_name="/checkpoints")
    assert upd["value"] == app_server.default  # the default model is selected at start
    assert [p for _, p in upd["choices"]] == [app_server.default, app_server.checkpoint]
    assert upd["choices"][1][0] == "tiny · epoch 1/1" and upd["choices"][0][0].endswith(" · default")
    assert client.predict(checkpoint=app_server.checkpoint, api_name="/checkpoints")["value"] == app_server.checkpoint
    start = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/train_start"]
    names = [p["parameter_name"] for p in start["parameters"]]
    assert names[:15] == ["preset", "name", "epochs", "batch_size", "optimizer", "lr", "train_subset", "inv_coeff",
                          "var_coeff", "cov_coeff", "knn_train", "knn_test", "warmup_epochs", "views", "view_size"]


def test_train_start_poll_stop_resume(client, app_server):  # noqa: F811
    msg = client.predict(**KNOBS, api_name="/train_start")
    assert msg == "✅ run 1 started: saving to checkpoint <code>api_run</code>", msg
    again = client.predict(**KNOBS, api_name="/train_start")  # one job at a time
    assert again == "⚠️ Not started: a training run (api_run) is already in progress; stop it first." or \
        again == "⚠️ Not started: a training run (starting) is already in progress; stop it first.", again
    info, loss_plot = poll(client, lambda i: i["status"] == "running" and i["n_steps_logged"] >= 3)
    assert (info["total_steps"], info["n_train"], info["run"]) == (2 * (320 // 16), 320, "api_run")
    assert np.isfinite(info["loss"]) and info["pairs_per_s"] > 0 and info["eta_s"] > 0
    traces = plot_data(loss_plot)
    assert len(traces) == 4 and len(traces[0]["x"]) >= 3  # total + three terms
    assert client.predict(secret="", api_name="/train_stop").startswith("✅ stopping after the current step")
    info, _ = poll(client, lambda i: i["status"] == "stopped", timeout=60)
    ckpt = info["end"]["checkpoint"]
    assert os.path.basename(ckpt) == "api_run.safetensors"
    assert read_meta(ckpt)["step"] == info["step"]  # the checkpoint holds the last step the status showed
    assert client.predict(secret="", api_name="/train_stop") == "⚠️ no training run is in progress"
    # resume (0 more epochs = finish the planned run) continues from the stopped step
    msg = client.predict(checkpoint=ckpt, more_epochs=0, threads=1, device="cpu", secret="", api_name="/train_resume")
    assert msg == f"✅ run 2 started: resuming api_run at epoch 0 step {info['step']}, to epoch 2", msg
    info2, _ = poll(client, lambda i: i["run_id"] == 2 and i["status"] == "running" and i["step"] > info["step"])
    assert (info2["start_step"], info2["resumed_from"], info2["total_steps"]) == (info["step"], "api_run", 40)
    client.predict(secret="", api_name="/train_stop")
    poll(client, lambda i: not i["active"], timeout=60)
    bad = client.predict(**{**KNOBS, "name": "../escape"}, api_name="/train_start")
    assert bad.startswith("❌ Cannot start: invalid checkpoint name &#x27;../escape&#x27;"), bad
    done = client.predict(checkpoint=app_server.checkpoint, more_epochs=0, threads=1, device="cpu", secret="",
                          api_name="/train_resume")
    assert done == ("⚠️ Cannot resume: tiny has finished its 1 planned epochs; ask for more epochs to train further "
                    "(RE_TRAIN --epochs N trains N more)")
    with pytest.raises(Exception, match="less than minimum"):  # gradio validates the number box itself
        client.predict(**{**KNOBS, "batch_size": 1}, api_name="/train_start")
    with pytest.raises(Exception, match="greater than maximum"):
        client.predict(**{**KNOBS, "views": MAX_VIEWS + 1}, api_name="/train_start")


def test_simultaneous_starts_make_one_job(client, app_server):  # noqa: F811
    poll(client, lambda i: not i["active"], timeout=60)
    before = client.predict(checkpoint=None, resume_checkpoint=None, api_name="/train_status")[5]["run_id"]
    barrier, replies = threading.Barrier(2), []

    def start():
        c = Client(app_server.url, verbose=False)  # two independent visitors
        barrier.wait()
        replies.append(c.predict(**{**KNOBS, "name": "twin"}, api_name="/train_start"))

    threads = [threading.Thread(target=start) for _ in range(2)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    started = [r for r in replies if r.startswith("✅")]
    refused = [r for r in replies if "already in progress" in r]
    assert len(started) == 1 and len(refused) == 1, replies
    info, _ = poll(client, lambda i: i["active"], timeout=60)
    assert info["run_id"] == before + 1 and started[0].startswith(f"✅ run {before + 1} started")
    client.predict(secret="", api_name="/train_stop")
    info, _ = poll(client, lambda i: not i["active"], timeout=90)
    assert info["run_id"] == before + 1 and info["run"] == "twin"  # still the one run


def test_evaluate_with_random_baseline(client, app_server):  # noqa: F811
    t0 = time.time()
    summary, per_class, confusion, result = client.predict(checkpoint=app_server.checkpoint, n_train=300, n_test=100,
                                                           probe_epochs=5, api_name="/evaluate")
    first = time.time() - t0
    res = result["results"]
    assert list(res) == ["tiny", "random init"]
    rows = summary.splitlines()
    for row, (name, r) in zip(rows[2:4], res.items(), strict=True):
        m = np.asarray(r["confusion"])
        assert m.shape == (10, 10) and m.sum() == 100 and (r["n_train"], r["n_test"]) == (300, 100)
        assert r["linear_top1"] == pytest.approx(np.trace(m) / 100, abs=1e-6)  # top-1 is the confusion's diagonal
        assert r["per_class"] == pytest.approx((np.diag(m) / np.maximum(m.sum(1), 1)).tolist(), abs=1e-6)
        assert row.startswith(f"| {name} | **{100 * r['linear_top1']:.1f}%** | {100 * r['knn_top1']:.1f}% |")
    assert [t["name"] for t in plot_data(per_class)] == ["tiny", "random init"] and len(plot_data(confusion)) == 2
    t0 = time.time()
    again = client.predict(checkpoint=app_server.checkpoint, n_train=300, n_test=100, probe_epochs=5,
                           api_name="/evaluate")[3]
    assert again["results"] == res  # cached: identical, and fast
    assert time.time() - t0 < max(2.0, first / 3)


def index_files(app_server, name="tiny"):  # noqa: F811
    d = glob.glob(os.path.join(app_server.cache, "explore", f"{name}-*-n{MAP_POINTS}-*"))
    assert len(d) == 1, d
    return {n: np.load(os.path.join(d[0], f"{n}.npy")) for n in ("features", "labels", "indices")}, d[0]


def test_explore_cifar_upload(client, app_server, cifar_root):  # noqa: F811
    # test index 0 is in the (evenly spaced) map subset, so the image must find itself
    folder = os.path.join(cifar_root, "test", sorted(os.listdir(os.path.join(cifar_root, "test")))[0])
    f = os.path.join(folder, sorted(os.listdir(folder))[0])
    out = client.predict(image=handle_file(f), checkpoint=app_server.checkpoint, api_name="/explore_upload")
    status, original, v1, p1, v2, p2, emb, guess, mapimg, nbrs, info, d1, d2 = out
    assert d1.startswith("- crop at (") and "- horizontal flip: " in d2
    fmt = Image.open(f).format
    assert status.splitlines()[0] == f"**uploaded {os.path.basename(f)} (32×32 RGB, {fmt})**" and info["notes"] == []
    assert Image.open(original).size == (160, 160) and Image.open(emb).size == (320, 40)  # 128-d: 4 rows of 32
    assert Image.open(v1).size == (160, 160) and Image.open(v2).size == (160, 160)
    assert p1 == info["views"][0] and p2 == info["views"][1] and p1 != p2
    arrays, _ = index_files(app_server)
    order, sims = expected_query(arrays["features"], np.asarray(info["embedding"], dtype=np.float32))
    n = info["neighbours"]
    assert [x["index"] for x in n] == arrays["indices"][order[:8]].tolist() and n[0]["index"] == 0  # itself first
    assert [x["similarity"] for x in n] == [round(float(s), 4) for s in sims[order[:8]]] and n[0]["similarity"] > 0.99
    assert [x["class"] for x in n] == [CLASSES[c] for c in arrays["labels"][order[:8]]]
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", nbrs)  # inline thumbnails: no file per neighbour
    # the caption rounds the similarity itself (rounding the 4-decimal value again could differ in the last digit)
    shown = zip(n, sims[order[:8]], strict=True)
    assert captions == [f"{x['class']} · {float(s):.3f} · #{x['index']}" for x, s in shown]
    assert nbrs.count("<img src='data:image/png;base64,") == 8
    votes = np.bincount(arrays["labels"][order[:20]], np.exp((sims[order[:20]] - sims[order[0]]) / 0.1), 10)
    assert list(info["guess"].values()) == pytest.approx((votes / votes.sum()).tolist(), abs=1e-6)
    assert info["prediction"] == guess["label"] == CLASSES[int(votes.argmax())] and info["embedding_dim"] == 128
    # new views for the same visitor's image
    st, w1, q1, w2, q2, e1, e2 = client.predict(checkpoint=app_server.checkpoint, api_name="/explore_views")
    assert Image.open(w1).size == (160, 160) and "crop_xywh" in q1 and (q1, q2) != (p1, p2)


def test_umap_and_projection(client, app_server):  # noqa: F811
    t0 = time.time()
    status, plot, info = client.predict(checkpoint=app_server.checkpoint, api_name="/umap")
    print(f"\nUMAP of {MAP_POINTS} points (cold, incl. child process start): {time.time() - t0:.1f}s")
    assert info["points"] == MAP_POINTS and info["classes"] == CLASSES and info["cached"] is False
    arrays, d = index_files(app_server)
    coords = np.load(os.path.join(d, "umap.npy"))
    pos = map_positions(plot_data(plot))
    assert len(pos) == MAP_POINTS
    assert all(pos[int(i)] == tuple(np.round(c, 3).tolist()) for i, c in zip(arrays["indices"], coords, strict=True))
    # now an explored test image gets the position its 10 nearest neighbours give it
    out = client.predict(index=1234, checkpoint=app_server.checkpoint, api_name="/explore_test_image")
    info = out[10]
    order, sims = expected_query(arrays["features"], np.asarray(info["embedding"], dtype=np.float32))
    order = order[arrays["indices"][order] != 1234][:10]  # leave-one-out for test images
    w = np.exp((sims[order] - sims[order[0]]) / 0.05)
    assert info["map_xy"] == pytest.approx(((w[:, None] * coords[order]).sum(0) / w.sum()).tolist(), abs=1e-4)
    assert 1234 not in [n["index"] for n in info["neighbours"]] and Image.open(out[8]).size[0] == 360
    status, plot, info2 = client.predict(checkpoint=app_server.checkpoint, api_name="/umap")
    assert info2["cached"] is True and info2["marker"] == {"x": info["map_xy"][0], "y": info["map_xy"][1],
                                                           "label": "test #1234"}
    star = [t for t in plot_data(plot) if t.get("name") == "your image"]
    assert len(star) == 1 and star[0]["x"] == [info["map_xy"][0]]


def _enc(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def test_bad_inputs_get_messages(client, app_server, tmp_path):  # noqa: F811
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    frames = [Image.new("RGB", (40, 40), c) for c in ("red", "blue", "green")]
    deep = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
    cases = {  # file name: (bytes, expected text in status or notes, refused?)
        "not_an_image.png": (b"hello, I am text", "not an image", True),
        "truncated.jpg": (_enc(rgb.resize((256, 256)), "JPEG")[:2000], "truncated", True),
        "bomb.png": (_enc(Image.new("1", (12000, 12000)), "PNG"), "too large", True),
        "gray.png": (_enc(rgb.convert("L"), "PNG"), "grayscale", False),
        "rgba.png": (_enc(rgb.convert("RGBA"), "PNG"), "RGBA", False),
        "cmyk.jpg": (_enc(rgb.convert("CMYK"), "JPEG"), "CMYK", False),
        "deep.png": (_enc(deep, "PNG"), "16-bit", False),
        "anim.gif": (_enc(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50), "first of 3 frames",
                     False),
    }
    for name, (data, expect, refused) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        out = client.predict(image=handle_file(str(p)), checkpoint=app_server.checkpoint, api_name="/explore_upload")
        if refused:
            assert out[0].startswith("❌ This image cannot be used: ") and expect in out[0], (name, out[0])
        else:
            assert expect in out[0] and len(out[10]["neighbours"]) == 8, (name, out[0])
    p = tmp_path / "notes.txt"  # a file type the upload box does not accept
    p.write_text("plain text")
    with pytest.raises(Exception, match="Invalid file type"):
        client.predict(image=handle_file(str(p)), checkpoint=app_server.checkpoint, api_name="/explore_upload")
    p = tmp_path / "huge.png"  # over the upload size limit (launch(max_file_size=20 MB))
    p.write_bytes(b"\x89PNG" + os.urandom(21 * 1024 * 1024))
    with pytest.raises(Exception, match="(?i)size|large|413"):
        client.predict(image=handle_file(str(p)), checkpoint=app_server.checkpoint, api_name="/explore_upload")
    # out-of-range test index, and the app still serves afterwards
    out = client.predict(index=10**6, checkpoint=app_server.checkpoint, api_name="/explore_test_image")
    assert out[0] == f"⚠️ Test image numbers run from 0 to {app_server.n_test - 1}."  # 1999 with the sample
    out = client.predict(index=3, checkpoint=app_server.checkpoint, api_name="/explore_test_image")
    assert [n["index"] for n in out[10]["neighbours"]][:1] != [3] and len(out[10]["neighbours"]) == 8
    assert app_server.proc.poll() is None
    log = app_server.tail(10**7)  # gradio logs its own input-validation errors; nothing else may fail
    assert log.count("Traceback") == log.count("gradio.exceptions.Error:"), log[-3000:]


def test_visitors_do_not_share_images(app_server):  # noqa: F811
    a, b = Client(app_server.url, verbose=False), Client(app_server.url, verbose=False)
    a.predict(index=5, checkpoint=app_server.checkpoint, api_name="/explore_test_image")
    b.predict(index=7, checkpoint=app_server.checkpoint, api_name="/explore_test_image")
    assert a.predict(checkpoint=app_server.checkpoint, api_name="/umap")[2]["marker"]["label"] == "test #5"
    assert b.predict(checkpoint=app_server.checkpoint, api_name="/umap")[2]["marker"]["label"] == "test #7"
    fresh = Client(app_server.url, verbose=False)
    assert fresh.predict(checkpoint=app_server.checkpoint, api_name="/umap")[2]["marker"] is None
    assert fresh.predict(checkpoint=app_server.checkpoint, api_name="/explore_views")[0] == \
        "ℹ️ Upload or pick an image first."


def test_hub_load_gives_a_message(client):
    assert client.predict(repo_id="not a repo", filename="", api_name="/hub_load")[0] == (
        "❌ &#x27;not a repo&#x27; is not a Hub repo id; it looks like &#x27;user/vicreg-cifar10&#x27;")
    text = client.predict(repo_id="vicreg-studio-tests/does-not-exist", filename="",
                          api_name="/hub_load")[0]
    assert text == "❌ the Hugging Face Hub cannot be reached from this server (offline?)"  # endpoint: a closed port
