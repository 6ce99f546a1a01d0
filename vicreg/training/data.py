"""Datasets as whole uint8 tensors: CIFAR-10 via torchvision, or any ImageFolder-layout directory.

Images are decoded once into a uint8 cache on disk (.npz, loaded without pickle), so a second run
starts in seconds; training then holds the whole set on its device and indexes batches from it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from ..core.storage import default_cache_dir
from ..runfiles.files import atomic_write

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DataError(RuntimeError):
    """A dataset that cannot be found, read or downloaded; the message says what to do."""


@dataclass
class Split:
    images: Tensor  # (N, 3, S, S) uint8
    labels: Tensor  # (N,) int64

    def __len__(self) -> int:
        return self.labels.shape[0]


def even_indices(total: int, n: int | None) -> Tensor:
    """n evenly spaced indices of 0..total-1, in order; all of them when n is 0, None or at least total."""
    if not n or n >= total:
        return torch.arange(total)
    return torch.linspace(0, total - 1, n).long()


def even_subset(split: Split, n: int | None) -> tuple[Split, np.ndarray]:
    """n evenly spaced samples, so every class of a class-sorted folder is represented, and their
    indices; the whole split when n is 0, None or at least its size."""
    total = len(split)
    if not n or n >= total:
        return split, np.arange(total)
    idx = even_indices(total, n)
    return Split(split.images[idx], split.labels[idx]), idx.numpy()


@dataclass
class Dataset:
    train: Split
    test: Split
    classes: list[str]
    source: str


def list_split(root: str) -> tuple[list[str], list[int], list[str]]:
    """(image paths, labels, classes) of one split folder, in the order the dataset holds them."""
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
    if not classes:
        raise DataError(f"{root} has no class folders; expected {root}/<class>/<image>.jpg")
    paths, labels = [], []
    for idx, c in enumerate(classes):
        files = sorted(e.name for e in os.scandir(os.path.join(root, c)) if e.name.lower().endswith(IMAGE_EXTS))
        paths += [os.path.join(root, c, f) for f in files]
        labels += [idx] * len(files)
    if not paths:
        raise DataError(f"{root} holds no images ({', '.join(IMAGE_EXTS)})")
    return paths, labels, classes


def resize_center_crop(im, size: int):
    """PIL image -> size x size: short side resized (bicubic), then the centre crop. The one
    preprocessing for dataset folders and for the app's uploads, so both see the same pixels."""
    from PIL import Image

    if im.size == (size, size):
        return im
    w, h = im.size
    s = size / min(w, h)
    # reducing_gap: PIL first shrinks big images by an integer factor, far faster for photos
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC, reducing_gap=3.0)
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    return im.crop((left, top, left + size, top + size))


def load_image_file(path: str, size: int) -> np.ndarray:
    """Decode one file to (3, size, size) uint8 RGB: resize the short side, centre crop."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(resize_center_crop(im.convert("RGB"), size), dtype=np.uint8).transpose(2, 0, 1)


def _decode_split(root: str, size: int, progress=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    paths, labels, classes = list_split(root)
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def work(i: int) -> None:
        try:
            out[i] = load_image_file(paths[i], size)
        except Exception as e:  # a corrupt file names itself instead of failing somewhere deep
            raise DataError(f"cannot read image {paths[i]}: {e}") from e

    # PIL releases the GIL while decoding, so threads overlap the decodes.
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        for n, _ in enumerate(pool.map(work, range(len(paths)), chunksize=256), 1):
            if progress and n % 2000 == 0:
                progress(n, len(paths))
    return out, np.asarray(labels, dtype=np.int64), classes


def _cache_key(root: str, size: int) -> str:
    h = hashlib.sha1(f"{os.path.abspath(root)}|{size}|v2".encode())
    for split in ("train", "test"):
        for entry in sorted(os.scandir(os.path.join(root, split)), key=lambda e: e.name):
            if entry.is_dir():
                st = os.stat(entry.path)
                h.update(f"{split}/{entry.name}:{st.st_mtime_ns}:{len(os.listdir(entry.path))}".encode())
    return h.hexdigest()[:16]


def cache_path(root: str, size: int = 32, cache_dir: str | None = None) -> str:
    """Where the decoded uint8 copy of an image folder lives (changes when the folder changes)."""
    return os.path.join(cache_dir or default_cache_dir(), f"{_cache_key(root, size)}.npz")


def load_image_folder(root: str, size: int = 32, cache_dir: str | None = None, progress=None) -> Dataset:
    for split in ("train", "test"):
        if not os.path.isdir(os.path.join(root, split)):
            raise DataError(f"{root} is not an image folder: expected {root}/{split}/<class>/<image>.jpg")
    cache = cache_path(root, size, cache_dir)
    if os.path.exists(cache):
        return replace(load_packed(cache), source=os.path.abspath(root))
    tr_x, tr_y, classes = _decode_split(os.path.join(root, "train"), size, progress)
    te_x, te_y, te_classes = _decode_split(os.path.join(root, "test"), size, progress)
    if te_classes != classes:
        raise DataError(f"train and test class folders differ in {root}: {classes} vs {te_classes}")
    arrays = {"train_x": tr_x, "train_y": tr_y, "test_x": te_x, "test_y": te_y}
    atomic_write(cache, lambda tmp: np.savez(tmp, classes=np.asarray(json.dumps(classes)), **arrays), fsync=False)
    return _from_arrays(arrays, classes, os.path.abspath(root))


def _from_arrays(arrays: dict, classes: list[str], source: str) -> Dataset:
    return Dataset(
        Split(torch.from_numpy(arrays["train_x"]), torch.from_numpy(arrays["train_y"]).long()),
        Split(torch.from_numpy(arrays["test_x"]), torch.from_numpy(arrays["test_y"]).long()),
        classes,
        source,
    )


def encode_images(images: np.ndarray, sources: list[bytes | None] | None = None) -> dict[str, np.ndarray]:
    """(N, 3, S, S) uint8 -> the two arrays a packed .npz may hold instead of `x`: every image's file
    bytes end to end (`bytes`) and where each ends (`ends`). An image's source file is kept as it is
    when it decodes to exactly its pixels (CIFAR-10's JPEG copy: about a third of the raw size, and
    no second lossy step); any other image is stored as PNG, which is lossless."""
    from PIL import Image

    chunks = []
    for i, chw in enumerate(images):
        src = sources[i] if sources is not None else None
        if src is None or not np.array_equal(decode_image(src), chw):
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0))).save(buf, "PNG", optimize=True)
            src = buf.getvalue()
        chunks.append(np.frombuffer(src, dtype=np.uint8))
    return {"bytes": np.concatenate(chunks) if chunks else np.zeros(0, np.uint8),
            "ends": np.cumsum([len(c) for c in chunks], dtype=np.int64)}


def decode_image(data: bytes) -> np.ndarray:
    """One encoded image file -> (3, H, W) uint8 RGB, as it is (no resizing)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)


def _decode_packed(data: np.ndarray, ends: np.ndarray) -> np.ndarray:
    starts = np.concatenate([[0], ends[:-1]]).tolist()
    # PIL releases the GIL while decoding, so threads overlap the decodes (the app decodes its sample at start)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return np.stack(list(pool.map(lambda ab: decode_image(data[ab[0]:ab[1]].tobytes()),
                                      zip(starts, ends.tolist(), strict=True), chunksize=256)))


def read_packed(path: str) -> dict[str, np.ndarray]:
    """Every array of a packed .npz (no pickle), with `train_x` / `test_x` as (N, 3, S, S) uint8 whether
    the file holds them raw or encoded (`<name>_bytes` and `<name>_ends`, see encode_images)."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    for name in ("train_x", "test_x"):
        if name not in out and f"{name}_bytes" in out and f"{name}_ends" in out:
            out[name] = _decode_packed(out.pop(f"{name}_bytes"), out.pop(f"{name}_ends"))
    return out


def load_packed(path: str) -> Dataset:
    """A dataset packed in one .npz (no pickle): uint8 train_x / test_x shaped (N, 3, S, S) (raw, or
    encoded as read_packed reads them), int train_y / test_y, and `classes` as a JSON list. The decode
    cache and the app's embedded CIFAR-10 sample both use this layout; other arrays are ignored."""
    try:
        packed = read_packed(path)
        arrays = {k: packed[k] for k in ("train_x", "train_y", "test_x", "test_y", "classes")}
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{os.path.basename(path)} is not a packed dataset (.npz with train_x, train_y, test_x, "
                        f"test_y and classes): {e}") from None
    return _from_arrays(arrays, json.loads(str(arrays["classes"])), os.path.abspath(path))


def load_torchvision_cifar10(root: str) -> Dataset:
    from torchvision.datasets import CIFAR10

    try:
        tr = CIFAR10(root, train=True, download=True)
        te = CIFAR10(root, train=False, download=True)
    except Exception as e:
        raise DataError(
            f"CIFAR-10 is not in {root!r} and could not be downloaded ({type(e).__name__}: {e}). "
            "Point --data (or the VICREG_DATA environment variable) at a local copy: either "
            "torchvision's cifar-10-batches-py folder's parent, or an image folder with train/<class>/ "
            "and test/<class>/."
        ) from None

    def split(d) -> Split:
        return Split(torch.from_numpy(d.data).permute(0, 3, 1, 2).contiguous(), torch.as_tensor(d.targets))

    return Dataset(split(tr), split(te), list(tr.classes), os.path.abspath(root))


def load_dataset(data: str, size: int = 32, cache_dir: str | None = None, progress=None) -> Dataset:
    """`data` is a packed .npz, an ImageFolder root (train/ and test/ inside) or a torchvision
    CIFAR-10 root (downloaded there if missing)."""
    if data.endswith(".npz"):
        if not os.path.isfile(data):
            raise DataError(f"packed dataset {data} does not exist; point --data (or VICREG_DATA) at a CIFAR-10 "
                            "folder or a packed .npz")
        return load_packed(data)
    if os.path.isdir(os.path.join(data, "train")) and os.path.isdir(os.path.join(data, "test")):
        return load_image_folder(data, size, cache_dir, progress)
    return load_torchvision_cifar10(data)
