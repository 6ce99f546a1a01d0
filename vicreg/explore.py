"""Per-image work behind the app's Explore / UMAP tabs, with no gradio in sight (the per-process
caches that use it live in studio.py).

- `decode_image`: untrusted bytes or a path -> (3, 32, 32) uint8, with every bad input turned into
  a `BadImage` (a ValueError) whose message can be shown to a visitor as is.
- Neighbours, the kNN class guess and the map position of a new image are computed against that
  index: the position is the similarity-weighted mean of its nearest neighbours' map positions
  (milliseconds; no fitted UMAP object needed, so nothing has to be pickled).
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .augment import augment
from .config import AugmentConfig
from .data import resize_center_crop

MAX_PIXELS = int(os.environ.get("VICREG_MAX_PIXELS", 40_000_000))
MAX_BYTES = int(float(os.environ.get("VICREG_MAX_UPLOAD_MB", 20)) * 1024 * 1024)
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL warns above this and refuses above twice this
MAP_POINTS = 10_000  # default size of the neighbour bank / UMAP (the whole CIFAR-10 test set)
Progress = Callable[[float, str], None]


class BadImage(ValueError):
    """An upload that cannot be used; str(e) is a message for the visitor."""


@dataclass
class Decoded:
    pixels: np.ndarray  # (3, size, size) uint8 RGB, as the model sees it
    notes: list[str]  # conversions applied, for display
    size: tuple[int, int]  # original (width, height)
    mode: str
    format: str | None


def _to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if mode.startswith("I;16") or (mode == "I" and lo >= 0 and hi <= 65535 and hi > 255):
            a, how = a / 257.0, "16-bit image scaled to 8-bit"
        elif mode == "F" and lo >= 0 and hi <= 1:
            a, how = a * 255.0, "float image scaled to 8-bit"
        elif lo >= 0 and hi <= 255:
            how = f"{mode} image read as 8-bit"
        else:
            a, how = (a - lo) / max(hi - lo, 1e-12) * 255.0, f"{mode} image min-max scaled to 8-bit"
        notes.append(how)
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("transparent areas composited on white")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if mode != "RGB":
        notes.append({"L": "grayscale copied to 3 channels", "1": "black-and-white image converted to RGB",
                      "CMYK": "CMYK converted to RGB"}.get(mode, f"{mode} converted to RGB"))
    return im.convert("RGB")


def _unreadable(e: Exception) -> BadImage:
    msg = str(e)
    if "runcated" in msg or "broken data stream" in msg or isinstance(e, EOFError):
        return BadImage("the image file is truncated or corrupt (an incomplete upload or download?)")
    return BadImage(f"this image cannot be decoded ({msg or type(e).__name__})")


def decode_image(src: bytes | str | os.PathLike, size: int = 32, max_pixels: int | None = None, max_bytes: int | None = None) -> Decoded:
    """Untrusted image -> (3, size, size) uint8: first frame of animations, EXIF orientation
    applied, converted to RGB, short side resized (bicubic) and centre-cropped like the dataset."""
    max_pixels, max_bytes = max_pixels or MAX_PIXELS, max_bytes or MAX_BYTES
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        try:
            if os.path.getsize(src) > max_bytes:
                raise BadImage(f"the file is larger than {max_bytes / 2**20:.0f} MB; please upload a smaller image")
            with open(src, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BadImage(f"cannot read the uploaded file ({e.strerror or e})") from None
    if not data:
        raise BadImage("the file is empty")
    if len(data) > max_bytes:
        raise BadImage(f"the file is larger than {max_bytes / 2**20:.0f} MB; please upload a smaller image")
    too_big = f"the image is too large to decode safely (limit {max_pixels / 1e6:.0f} megapixels)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(too_big) from None
    except UnidentifiedImageError:
        raise BadImage("this file is not an image that can be read; upload a PNG, JPEG, GIF, BMP, WebP or TIFF") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise _unreadable(e) from None
    notes: list[str] = []
    with im:
        w, h = im.size
        if w < 1 or h < 1:
            raise BadImage("the image has no pixels")
        if w * h > max_pixels:
            raise BadImage(too_big + f"; this one is {w}x{h}")
        frames = getattr(im, "n_frames", 1)
        try:
            if frames > 1:
                im.seek(0)
                notes.append(f"animated image: using the first of {frames} frames")
            if im.format == "JPEG":
                im.draft(None, (2 * size, 2 * size))  # decode at reduced scale: big JPEGs stay fast
            im.load()
            orig_mode, fmt = im.mode, im.format
            im2 = ImageOps.exif_transpose(im)
            rgb = _to_rgb(im2, notes)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise BadImage(too_big) from None
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError) as e:
            raise _unreadable(e) from None
    if rgb.size != (size, size):
        notes.append(f"resized from {rgb.size[0]}x{rgb.size[1]} to {size}x{size} (short side, centre crop)")
        rgb = resize_center_crop(rgb, size)
    return Decoded(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy(), notes, (w, h), orig_mode, fmt)


# ---------------------------------------------------------------- neighbours and projection


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def nearest(bank: np.ndarray, query: np.ndarray, k: int, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the (L2-normalised) bank most cosine-similar to `query`: (rows, similarities),
    best first. `exclude` drops one row (leave-one-out when the query is a bank image)."""
    sims = bank @ l2_normalize(query)
    if exclude is not None and 0 <= exclude < sims.shape[0]:
        sims[exclude] = -np.inf
    k = min(k, sims.shape[0] - (exclude is not None))
    rows = np.argpartition(-sims, k - 1)[:k]
    rows = rows[np.argsort(-sims[rows], kind="stable")]
    return rows, sims[rows]


def knn_vote(sims: np.ndarray, labels: np.ndarray, num_classes: int, temperature: float = 0.1) -> np.ndarray:
    """Class probabilities from neighbours' votes weighted exp(sim / T) (as vicreg.evaluate)."""
    w = np.exp((sims - sims.max()) / temperature)
    votes = np.bincount(labels, weights=w, minlength=num_classes)
    return votes / max(votes.sum(), 1e-12)


def project(sims: np.ndarray, coords: np.ndarray, temperature: float = 0.05) -> np.ndarray:
    """Map position of a new point: the softmax(sim / T)-weighted mean of its neighbours' positions."""
    w = np.exp((sims - sims.max()) / temperature)
    return (w[:, None] * coords).sum(0) / w.sum()


@dataclass
class Neighbour:
    index: int  # position in the CIFAR-10 test split
    label: int
    cls: str
    similarity: float


@dataclass
class FeatureIndex:
    key: str
    features: np.ndarray  # (N, D) float32, L2-normalised
    labels: np.ndarray  # (N,) int64
    indices: np.ndarray  # (N,) positions in the test split
    classes: list[str]

    def row_of(self, test_index: int | None) -> int | None:
        if test_index is None:
            return None
        hit = np.nonzero(self.indices == test_index)[0]
        return int(hit[0]) if hit.size else None

    def query(self, emb: np.ndarray, k: int = 8, vote_k: int = 20, exclude_test_index: int | None = None):
        rows, sims = nearest(self.features, emb, max(k, vote_k), self.row_of(exclude_test_index))
        probs = knn_vote(sims[:vote_k], self.labels[rows[:vote_k]], len(self.classes))
        nbrs = [Neighbour(int(self.indices[r]), int(self.labels[r]), self.classes[self.labels[r]], float(s)) for r, s in zip(rows[:k], sims[:k])]
        return nbrs, {c: float(p) for c, p in zip(self.classes, probs)}, rows, sims


def two_views(pixels: np.ndarray, aug: AugmentConfig, seed: int) -> tuple[list[np.ndarray], list[dict]]:
    """Two augmented views (HWC uint8) of one (3, S, S) uint8 image and the parameters of each."""
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(pixels)).unsqueeze(0).expand(2, -1, -1, -1)
    views, params = augment(x, aug, g)
    imgs = [(v.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8) for v in views]
    return imgs, [params.describe(i) for i in range(2)]


def model_key(path: str | None) -> str:
    """Identity of a checkpoint for caches: path + mtime + size (a retrained file gets a new key)."""
    if path is None:
        return "random-seed0"
    st = os.stat(path)
    h = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_mtime_ns}|{st.st_size}".encode()).hexdigest()[:12]
    return f"{os.path.basename(path).removesuffix('.safetensors')[:40]}-{h}"


def map_points() -> int:
    return int(os.environ.get("VICREG_MAP_POINTS", MAP_POINTS))


def _save_npy(path: str, arr: np.ndarray) -> None:
    tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}.npy"
    np.save(tmp, arr)
    os.replace(tmp, path)
