import io
import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from vicreg.training import data as data_mod
from vicreg.training.data import DataError, even_subset, load_dataset
from vicreg.training.evaluate import knn_accuracy, knn_predict, linear_probe


@pytest.mark.full_data
def test_shared_cifar10_decodes_to_the_published_statistics(full_cifar):
    cifar = full_cifar
    assert cifar.train.images.shape == (50000, 3, 32, 32) and cifar.test.images.shape == (10000, 3, 32, 32)
    assert cifar.train.images.dtype == torch.uint8
    assert cifar.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert torch.bincount(cifar.train.labels).tolist() == [5000] * 10
    mean = cifar.train.images.float().mean((0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.4913, 0.4821, 0.4465]), atol=2e-4)  # the copy's README


def test_image_folder_with_png_odd_sizes_and_cache(tmp_path):
    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cats", "dogs"):
            os.makedirs(root / split / cls)
            for i in range(3):
                arr = rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / cls / f"{i}.png")
    (root / "train" / "cats" / "notes.txt").write_text("ignored")
    cache = tmp_path / "cache"
    d = load_dataset(str(root), cache_dir=str(cache))
    assert d.classes == ["cats", "dogs"] and d.train.images.shape == (6, 3, 32, 32)
    assert d.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(os.listdir(cache)) == 1
    d2 = load_dataset(str(root), cache_dir=str(cache))  # from the cache
    assert torch.equal(d.train.images, d2.train.images)


def test_packed_dataset_loads_exactly_what_was_packed(packed_cifar, cifar):
    d = load_dataset(packed_cifar)
    assert d.train.images.shape == (500, 3, 32, 32) and d.test.images.shape == (200, 3, 32, 32)
    assert d.train.images.dtype == torch.uint8 and d.train.labels.dtype == torch.int64
    assert d.classes == cifar.classes and d.source == os.path.abspath(packed_cifar)
    assert torch.bincount(d.train.labels).tolist() == [50] * 10 and torch.bincount(d.test.labels).tolist() == [20] * 10
    tr, _ = even_subset(cifar.train, 500)
    assert torch.equal(d.train.images, tr.images) and torch.equal(d.train.labels, tr.labels)


def test_packed_dataset_errors_never_try_a_download(tmp_path, monkeypatch):
    def no_download(root):
        raise AssertionError(f"torchvision download attempted for {root}")

    monkeypatch.setattr(data_mod, "load_torchvision_cifar10", no_download)
    missing = str(tmp_path / "nowhere.npz")
    with pytest.raises(DataError, match=f"packed dataset {missing} does not exist"):
        load_dataset(missing)
    np.savez(tmp_path / "other.npz", train_x=np.zeros((2, 3, 4, 4), np.uint8), classes=np.asarray(json.dumps(["a"])))
    with pytest.raises(DataError, match="other.npz is not a packed dataset"):
        load_dataset(str(tmp_path / "other.npz"))


def test_packed_images_stored_as_files_decode_exactly(tmp_path):
    """encode_images keeps a source file that decodes to exactly its pixels and stores any other image as
    PNG; read_packed and load_packed give back the very pixels either way."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(images[0].transpose(1, 2, 0)).save(buf, "JPEG", quality=75)
    jpeg = buf.getvalue()
    images[0] = data_mod.decode_image(jpeg)  # a JPEG file's own pixels: kept as it is
    lossy = io.BytesIO()
    Image.fromarray(images[1].transpose(1, 2, 0)).save(lossy, "JPEG", quality=50)  # not images[1]'s pixels
    enc = data_mod.encode_images(images, [jpeg, lossy.getvalue(), None, None, None])
    ends = enc["ends"].tolist()
    assert enc["bytes"][: ends[0]].tobytes() == jpeg
    assert enc["bytes"][ends[0]: ends[1]].tobytes().startswith(b"\x89PNG")  # the lossy source is not used
    labels = np.arange(5) % 2
    np.savez(tmp_path / "enc.npz", train_x_bytes=enc["bytes"], train_x_ends=enc["ends"], train_y=labels,
             test_x=images[:2], test_y=labels[:2], classes=np.asarray(json.dumps(["a", "b"])))
    packed = data_mod.read_packed(str(tmp_path / "enc.npz"))
    assert "train_x_bytes" not in packed and np.array_equal(packed["train_x"], images)
    ds = load_dataset(str(tmp_path / "enc.npz"))
    assert torch.equal(ds.train.images, torch.from_numpy(images)) and ds.train.labels.tolist() == labels.tolist()
    bad = enc["bytes"].copy()
    bad[ends[1]:] = 0  # the PNGs after the second image corrupted
    np.savez(tmp_path / "bad.npz", train_x_bytes=bad, train_x_ends=enc["ends"], train_y=labels, test_x=images[:2],
             test_y=labels[:2], classes=np.asarray(json.dumps(["a", "b"])))
    with pytest.raises(DataError, match="bad.npz is not a packed dataset"):
        load_dataset(str(tmp_path / "bad.npz"))


def test_the_embedded_sample_holds_its_images_as_files(cifar):
    """The shipped sample: 200 training and 600 test images per class, stored as their files (a third of the
    raw size), decoding to whole images."""
    from services.settings import SAMPLE

    with np.load(SAMPLE, allow_pickle=False) as z:
        assert {"train_x_bytes", "test_x_bytes"} <= set(z.files) and "test_x" not in z.files
        assert z["test_x_bytes"].nbytes < 0.4 * 6000 * 3 * 32 * 32
    assert cifar.train.images.shape == (2000, 3, 32, 32) and cifar.test.images.shape == (6000, 3, 32, 32)
    assert torch.bincount(cifar.train.labels).tolist() == [200] * 10
    assert torch.bincount(cifar.test.labels).tolist() == [600] * 10
    assert 100 < cifar.test.images.float().mean() < 140  # real photos, not blank or noise


@pytest.mark.full_data
def test_the_embedded_sample_is_the_datasets_own_pixels(full_cifar):
    from services.settings import SAMPLE

    z = data_mod.read_packed(SAMPLE)
    for split, name in ((full_cifar.train, "train"), (full_cifar.test, "test")):
        rows = torch.from_numpy(z[f"{name}_index"])
        assert torch.equal(split.images[rows], torch.from_numpy(z[f"{name}_x"]))
        assert split.labels[rows].tolist() == z[f"{name}_y"].tolist()


def test_bad_folders_say_what_to_do(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "test" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "x.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "test" / "a" / "y.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot read image"):
        load_dataset(str(tmp_path), cache_dir=str(tmp_path / "c"))


def _knn_reference(bank, bank_y, queries, num_classes, k, t):
    """Weighted kNN written out per query in float64: sort the cosine similarities, sum exp(sim / t)."""
    out = torch.zeros(len(queries), num_classes, dtype=torch.float64)
    b = bank.double() / bank.double().norm(dim=1, keepdim=True)
    for i, q in enumerate(queries.double()):
        sims = b @ (q / q.norm())
        for j in sims.argsort(descending=True)[:k].tolist():
            out[i, bank_y[j]] += math.exp(sims[j].item() / t)
    return out


def test_knn_scores_by_hand():
    bank = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]])  # cosine to (1, 0): 1, 0, 1/sqrt(2)
    scores = knn_predict(bank, torch.tensor([0, 1, 1]), torch.tensor([[5.0, 0.0]]), 2, k=2, temperature=0.5)
    assert torch.allclose(scores, torch.tensor([[math.exp(2.0), math.exp(math.sqrt(0.5) / 0.5)]]), rtol=1e-6)


def test_knn_on_separable_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 5
    bank_y = torch.arange(4).repeat_interleave(50)
    bank = centers[bank_y] + torch.randn(200, 16, generator=g)
    q_y = torch.arange(4).repeat_interleave(10)
    q = centers[q_y] + torch.randn(40, 16, generator=g)
    assert knn_accuracy(bank, bank_y, q, q_y, 4, k=20) == 1.0
    scores = knn_predict(bank, bank_y, q, 4, k=20, chunk=16)  # several chunks
    assert torch.allclose(scores.double(), _knn_reference(bank, bank_y, q, 4, k=20, t=0.1), rtol=1e-4)
    # shuffled labels -> chance level
    assert knn_accuracy(bank, bank_y[torch.randperm(200, generator=g)], q, q_y, 4, k=20) < 0.6


def test_linear_probe_learns_a_linear_rule_and_reports_confusion():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 8, generator=g)
    w = torch.randn(8, 3, generator=g)
    y = (x @ w).argmax(1)
    r = linear_probe(x[:1500], y[:1500], x[1500:], y[1500:], 3, epochs=100, lr=5e-2, weight_decay=0, batch_size=128)
    assert r.top1 > 0.95 and r.train_top1 > 0.95
    conf = torch.tensor(r.confusion)
    assert conf.sum().item() == 500 and conf.shape == (3, 3)
    assert r.per_class == pytest.approx((conf.diag().float() / conf.sum(1).float()).tolist())
