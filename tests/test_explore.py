"""Unit tests of the app's per-image services: upload decoding (services/images.py), neighbours, votes
and map positions (services/features/neighbours.py), view pairs (services/features/views.py), the UMAP child's kNN graph
(services/features/umap_fit.py), the data source and the Hub download's messages."""
import io
import os
from itertools import pairwise

import numpy as np
import pytest
from PIL import Image

from services.features.neighbours import FeatureIndex, knn_vote, l2_normalize, nearest, project
from services.features.views import training_views
from services.images import BadImage, decode_image
from vicreg.core.config import AugmentConfig
from vicreg.training.data import DataError

MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # PIL's default: the app must leave it alone


def enc(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8))


# ------------------------------------------------------------------ decoding: refused inputs

def test_non_image_bytes_refused():
    with pytest.raises(BadImage, match="not an image"):
        decode_image(b"%PDF-1.4 definitely not a picture")
    with pytest.raises(BadImage, match="empty"):
        decode_image(b"")


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.8])
def test_truncated_jpeg_refused(photo, keep):
    big = photo.resize((256, 256))
    data = enc(big, "JPEG", quality=95)
    with pytest.raises(BadImage, match="truncated or corrupt"):
        decode_image(data[: int(len(data) * keep)])


def test_decompression_bomb_refused():
    # 400 Mpx: over twice PIL's limit -> DecompressionBombError inside Image.open
    with pytest.raises(BadImage, match="too large"):
        decode_image(enc(Image.new("L", (20000, 20000)), "PNG"))
    # 48 Mpx: over this app's 40 Mpx limit but under PIL's own (global, never changed) -> refused by ours
    with pytest.raises(BadImage, match="too large .*8000x6000"):
        decode_image(enc(Image.new("1", (8000, 6000)), "PNG"))
    assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS
    # an explicit, smaller limit for this call
    with pytest.raises(BadImage, match="too large"):
        decode_image(enc(Image.new("RGB", (100, 100)), "PNG"), max_pixels=5000)


def test_size_limit_and_missing_file(tmp_path, photo):
    with pytest.raises(BadImage, match="larger than"):
        decode_image(enc(photo, "PNG"), max_bytes=100)
    with pytest.raises(BadImage, match="cannot read"):
        decode_image(str(tmp_path / "nope.png"))


# ------------------------------------------------------------------ decoding: conversions

def test_grayscale_becomes_three_equal_channels(photo):
    d = decode_image(enc(photo.convert("L"), "PNG"))
    assert d.pixels.shape == (3, 32, 32) and d.pixels.dtype == np.uint8
    assert (d.pixels[0] == d.pixels[1]).all() and (d.pixels[1] == d.pixels[2]).all()
    assert d.mode == "L" and any("grayscale" in n for n in d.notes)


def test_rgba_transparent_is_white():
    a = np.zeros((32, 32, 4), dtype=np.uint8)
    a[..., 0] = 200  # red, but the left half fully transparent
    a[:, 16:, 3] = 255
    d = decode_image(enc(Image.fromarray(a, "RGBA"), "PNG"))
    assert (d.pixels[:, :, :16] == 255).all()
    assert (d.pixels[0, :, 16:] == 200).all() and (d.pixels[1:, :, 16:] == 0).all()
    assert any("transparent" in n for n in d.notes)


def test_cmyk_converted():
    d = decode_image(enc(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=100))
    r, g, b = (d.pixels[c].mean() for c in range(3))
    assert r > 230 and g < 25 and b < 25  # pure red
    assert d.mode == "CMYK" and any("CMYK" in n for n in d.notes)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_scaled_to_8bit(fmt):
    a = np.full((32, 32), 257 * 100, dtype=np.uint16)
    a[:, 16:] = 65535
    im = Image.fromarray(a)
    assert im.mode == "I;16"
    d = decode_image(enc(im, fmt))
    assert (d.pixels[:, :, :16] == 100).all() and (d.pixels[:, :, 16:] == 255).all()
    assert any("16-bit" in n for n in d.notes)


def test_animated_gif_uses_first_frame():
    red, blue = Image.new("RGB", (40, 40), (255, 0, 0)), Image.new("RGB", (40, 40), (0, 0, 255))
    green = Image.new("RGB", (40, 40), (0, 255, 0))
    data = enc(red, "GIF", save_all=True, append_images=[blue, green], duration=50, loop=0)
    d = decode_image(data)
    assert d.pixels[0].min() > 240 and d.pixels[2].max() < 15
    assert any("first of 3 frames" in n for n in d.notes)


def test_resize_is_short_side_centre_crop():
    a = np.zeros((64, 128, 3), dtype=np.uint8)
    a[:, 32:96] = 255  # white centre square of a wide image
    d = decode_image(enc(Image.fromarray(a), "PNG"))
    assert d.size == (128, 64)
    assert d.pixels[:, :, 1:-1].min() >= 250 and d.pixels.min() > 200  # only the white centre kept


def test_real_cifar_file_matches_dataset(mini_cifar):
    from vicreg.training.data import load_image_file

    cls = sorted(os.listdir(os.path.join(mini_cifar, "test")))[3]
    f = os.path.join(mini_cifar, "test", cls, sorted(os.listdir(os.path.join(mini_cifar, "test", cls)))[0])
    d = decode_image(f)
    assert d.notes == [] and d.size == (32, 32)
    np.testing.assert_array_equal(d.pixels, load_image_file(f, 32))
    with open(f, "rb") as fh:
        np.testing.assert_array_equal(decode_image(fh.read()).pixels, d.pixels)


# ------------------------------------------------------------------ neighbours, votes, projection

@pytest.fixture(scope="module")
def synthetic():
    """Three well-separated clusters in 16-d with map coordinates around three centres."""
    rng = np.random.default_rng(1)
    centres = np.eye(16, dtype=np.float32)[:3] * 5
    labels = np.repeat(np.arange(3), 50)
    feats = l2_normalize(centres[labels] + rng.normal(0, 0.3, (150, 16)).astype(np.float32))
    map_centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    coords = map_centres[labels] + rng.normal(0, 0.5, (150, 2)).astype(np.float32)
    return feats, labels, coords, centres, map_centres


def test_nearest_matches_brute_force(synthetic):
    feats, labels, *_ = synthetic
    rng = np.random.default_rng(2)
    for _ in range(5):
        q = rng.normal(size=16).astype(np.float32)
        rows, sims = nearest(feats, q, 7)
        cos = feats @ (q / np.linalg.norm(q))
        np.testing.assert_array_equal(rows, np.argsort(-cos)[:7])
        np.testing.assert_allclose(sims, np.sort(cos)[::-1][:7], rtol=1e-5)
        assert (np.diff(sims) <= 0).all()


def test_nearest_exclude_and_self(synthetic):
    feats, *_ = synthetic
    rows, sims = nearest(feats, feats[17] * 3.0, 5)  # scale must not matter (cosine)
    assert rows[0] == 17 and sims[0] == pytest.approx(1.0, abs=1e-5)
    rows, _ = nearest(feats, feats[17], 5, exclude=17)
    assert 17 not in rows and len(rows) == 5


def test_knn_vote_and_index_query(synthetic):
    feats, labels, coords, centres, _ = synthetic
    probs = knn_vote(np.array([0.9, 0.8, 0.1]), np.array([2, 2, 0]), 3)
    assert probs.argmax() == 2 and probs.sum() == pytest.approx(1.0) and probs[1] == 0
    idx = FeatureIndex("t", feats, labels, np.arange(1000, 1150), ["a", "b", "c"])
    q = idx.query(centres[1], k=5, vote_k=10)
    nbrs, guess = q.neighbours, q.guess
    assert [n.cls for n in nbrs] == ["b"] * 5 and max(guess, key=guess.get) == "b"
    assert all(1050 <= n.index < 1100 for n in nbrs)  # indices map back to test positions
    assert all(a.similarity >= b.similarity for a, b in pairwise(nbrs))
    assert idx.row_of(1060) == 60 and idx.row_of(5) is None
    nbrs2 = idx.query(feats[60], k=3, exclude_test_index=1060).neighbours
    assert 1060 not in [n.index for n in nbrs2] and len(nbrs2) == 3


def test_projection_lands_near_its_neighbours(synthetic):
    feats, labels, coords, centres, map_centres = synthetic
    for c in range(3):
        rows, sims = nearest(feats, centres[c] + 0.1, 10)
        p = project(sims, coords[rows])
        assert np.linalg.norm(p - map_centres[c]) < 1.5
        lo, hi = coords[rows].min(0), coords[rows].max(0)
        assert (p >= lo - 1e-6).all() and (p <= hi + 1e-6).all()  # inside the neighbours' box
    # the weights favour the most similar neighbour
    p = project(np.array([0.99, 0.5]), np.array([[1.0, 1.0], [9.0, 9.0]]))
    assert np.linalg.norm(p - [1, 1]) < 0.01


def test_view_pair_with_params():
    px = np.random.default_rng(3).integers(0, 256, (3, 32, 32), dtype=np.uint8)
    views, params = training_views(px, AugmentConfig(), seed=5)
    assert len(views) == 2 and views[0].shape == (32, 32, 3) and views[0].dtype == np.uint8
    assert set(params[0]) >= {"crop_xywh", "flip", "jitter_order", "grayscale", "solarize"}
    again, params2 = training_views(px, AugmentConfig(), seed=5)
    np.testing.assert_array_equal(again[0], views[0])
    assert params2 == params
    other, params3 = training_views(px, AugmentConfig(), seed=6)
    assert params3 != params


def test_umap_knn_graph_is_exact():
    from services.features.umap_fit import knn_graph

    x = np.random.default_rng(4).normal(size=(300, 8)).astype(np.float32)
    idx, dist = knn_graph(x, 6, chunk=64)
    xn = l2_normalize(x)
    sim = xn @ xn.T
    assert (idx[:, 0] == np.arange(300)).all() and np.allclose(dist[:, 0], 0, atol=1e-3)
    for i in (0, 77, 299):
        expect = np.argsort(-sim[i])[:6]
        assert set(idx[i]) == set(expect)
        np.testing.assert_allclose(dist[i], np.sqrt(np.maximum(2 - 2 * np.sort(sim[i])[::-1][:6], 0)), atol=1e-3)


def test_hub_errors_are_messages(monkeypatch, tmp_path):
    from services.hub import HubError, download_from_hub

    with pytest.raises(HubError, match="not a Hub repo id"):
        download_from_hub("../etc/passwd", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="^Hugging Face Hub downloads are disabled on this server"):
        download_from_hub("someone/vicreg-cifar10", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(HubError) as err:
        download_from_hub("someone/vicreg-cifar10", str(tmp_path))
    assert str(err.value) == "the Hugging Face Hub cannot be reached from this server (offline?)"  # no host named
    assert os.listdir(tmp_path) == []


def test_data_source_prefers_the_full_dataset(tmp_path, cifar_root):
    from services.features.data import CIFAR_FILES, DataSource

    sample = tmp_path / "sample.npz"
    sample.write_bytes(b"")
    src = DataSource(str(tmp_path / "nothing"), str(sample))
    assert (src.full_available(), src.using_sample(), src.path()) == (False, True, str(sample))
    (tmp_path / "tv" / "cifar-10-batches-py").mkdir(parents=True)
    tv = DataSource(str(tmp_path / "tv"), str(sample))
    assert not tv.full_available()  # an incomplete torchvision root: never downloads by itself
    for b in CIFAR_FILES[:-1]:
        (tmp_path / "tv" / "cifar-10-batches-py" / b).write_bytes(b"")
    assert not tv.full_available()  # still being extracted
    (tmp_path / "tv" / "cifar-10-batches-py" / CIFAR_FILES[-1]).write_bytes(b"")
    assert tv.full_available() and tv.path() == str(tmp_path / "tv")
    full = DataSource(cifar_root, str(sample))
    assert (full.full_available(), full.using_sample(), full.path()) == (True, False, cifar_root)
    none = DataSource(str(tmp_path / "nothing"), str(tmp_path / "no-sample.npz"))
    with pytest.raises(DataError, match="no CIFAR-10 at"):
        none.dataset()


def test_one_dataset_loading_blocks_neither_another_nor_loads_twice(cifar_root, monkeypatch):
    """While the full dataset decodes (the bank builder's thread), the sample and its stored features answer,
    and a second caller for the same dataset waits for that load instead of decoding it again."""
    import threading

    import services.features.data as data_module
    from services.settings import SAMPLE

    gate, calls, real = threading.Event(), [], data_module.load_dataset

    def slow(path, **kw):
        if os.path.abspath(path) == os.path.abspath(cifar_root):
            calls.append(path)
            gate.wait(30)
        return real(path, **kw)

    monkeypatch.setattr(data_module, "load_dataset", slow)
    src = data_module.DataSource(cifar_root, SAMPLE)
    loaders = [threading.Thread(target=src.dataset) for _ in range(2)]
    for t in loaders:
        t.start()
    while not calls:
        gate.wait(0.01)
    assert len(src.dataset(SAMPLE).test) == 6000 and src.precomputed() is not None and not src.loaded()
    gate.set()
    for t in loaders:
        t.join(30)
    assert src.loaded() and len(src.dataset().test) == 6000 and len(calls) == 1
