"""VICReg augmentation (two views of each image, or more), batched on tensors on the training device.

Every sample draws its own parameters (crop box, flip, jitter factors and order, grayscale,
solarisation) as tensors, and one set of batched ops applies them, so there is no per-image
Python or PIL work in the training loop. The same code serves a single image in the app, which
can show the exact parameters that produced each view.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import AugmentConfig

_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


@dataclass
class AugParams:
    """Per-sample parameters; every field has the batch as its first dimension."""

    crop: Tensor  # (N, 4) x0, y0, w, h as fractions of the source image
    flip: Tensor  # (N,) bool
    jitter: Tensor  # (N,) bool: colour jitter applied at all
    brightness: Tensor  # (N,) factors; used only where jitter is true
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    order: Tensor  # (N, 4) permutation of JITTER_OPS indices
    gray: Tensor  # (N,) bool
    solarize: Tensor  # (N,) bool

    def __len__(self) -> int:
        return self.crop.shape[0]

    def describe(self, i: int) -> dict:
        """Plain-Python view of sample i's parameters (for display and logging)."""
        x0, y0, w, h = (round(float(v), 3) for v in self.crop[i])
        d: dict = {"crop_xywh": [x0, y0, w, h], "crop_area": round(w * h, 3), "flip": bool(self.flip[i])}
        if bool(self.jitter[i]):
            d["jitter_order"] = [JITTER_OPS[int(k)] for k in self.order[i]]
            for op in JITTER_OPS:
                d[op] = round(float(getattr(self, op)[i]), 3)
        else:
            d["jitter_order"] = []
        d["grayscale"] = bool(self.gray[i])
        d["solarize"] = bool(self.solarize[i])
        return d


def _uniform(n: int, lo: float, hi: float, g: torch.Generator | None, device) -> Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def sample_params(n: int, cfg: AugmentConfig, generator: torch.Generator | None = None, device="cpu") -> AugParams:
    """Draw parameters for n samples. Pass a seeded generator (on `device`) to reproduce them."""
    dev = torch.device(device)
    # RandomResizedCrop: like torchvision, try 10 (area, log-ratio) draws per sample and keep the
    # first that fits; samples with no fit fall back to the whole image. Done for all samples at
    # once so there is no per-sample loop.
    tries = 10
    area = _uniform(n * tries, *cfg.scale, generator, dev).view(n, tries)
    logr = _uniform(n * tries, math.log(cfg.ratio[0]), math.log(cfg.ratio[1]), generator, dev).view(n, tries)
    w = torch.sqrt(area * torch.exp(logr))
    h = torch.sqrt(area / torch.exp(logr))
    ok = (w <= 1) & (h <= 1)
    first = torch.where(ok.any(1), ok.int().argmax(1), torch.zeros(n, dtype=torch.long, device=dev))
    w = torch.where(ok.any(1), w.gather(1, first[:, None])[:, 0], torch.ones(n, device=dev))
    h = torch.where(ok.any(1), h.gather(1, first[:, None])[:, 0], torch.ones(n, device=dev))
    x0 = torch.rand(n, generator=generator, device=dev) * (1 - w)
    y0 = torch.rand(n, generator=generator, device=dev) * (1 - h)
    b, c, s, hu = cfg.jitter
    return AugParams(
        crop=torch.stack([x0, y0, w, h], 1),
        flip=torch.rand(n, generator=generator, device=dev) < cfg.flip_p,
        jitter=torch.rand(n, generator=generator, device=dev) < cfg.jitter_p,
        brightness=_uniform(n, max(0.0, 1 - b), 1 + b, generator, dev),
        contrast=_uniform(n, max(0.0, 1 - c), 1 + c, generator, dev),
        saturation=_uniform(n, max(0.0, 1 - s), 1 + s, generator, dev),
        hue=_uniform(n, -hu, hu, generator, dev),
        # argsort of uniform noise = one random permutation per sample
        order=torch.rand(n, 4, generator=generator, device=dev).argsort(1),
        gray=torch.rand(n, generator=generator, device=dev) < cfg.gray_p,
        solarize=torch.rand(n, generator=generator, device=dev) < cfg.solarize_p,
    )


def grayscale(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    v, _ = x.max(1)
    mn, _ = x.min(1)
    delta = v - mn
    s = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    d = delta.clamp_min(1e-12)
    # hue sector by which channel is the max (red wins ties, then green), in units of 1/6 turn
    h = torch.where(v == r, (g - b) / d, torch.where(v == g, 2 + (b - r) / d, 4 + (r - g) / d))
    h = torch.where(delta > 0, (h / 6) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, v], 1)


@functools.lru_cache(maxsize=64)
def channel_constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """A (1, C, 1, 1) constant, built once per (values, device, dtype): building it per call would
    copy host -> device, and synchronise a GPU, several times every step."""
    return torch.tensor(values, device=device, dtype=dtype).view(1, len(values), 1, 1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x.unbind(1)
    # f(n) = v - v*s*clamp(min(k, 4-k), 0, 1) with k = (n + 6h) mod 6, for n = 5, 3, 1 -> r, g, b
    n = channel_constant((5.0, 3.0, 1.0), x.device, x.dtype)
    k = (n + 6 * h.unsqueeze(1)) % 6
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * torch.minimum(k, 4 - k).clamp(0, 1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    hsv = rgb_to_hsv(x)
    h = (hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0
    return hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], 1))


def _jitter(x: Tensor, p: AugParams) -> Tensor:
    # Apply the four ops in each sample's own random order without splitting the batch (no host
    # syncs on a GPU). Brightness, contrast and saturation are all clamp(f*x + (1-f)*ref) with
    # ref = 0, the image's mean gray, or the pixel's gray: at order position k one blend serves
    # all three, with f = 1 (an exact identity) for samples whose k-th op is another one. Hue goes
    # through HSV, which is not an exact identity at shift 0, so it is masked with where().
    one = torch.ones_like(p.brightness)
    factors = torch.stack([p.brightness, p.contrast, p.saturation], 1)
    for k in range(4):
        op = torch.where(p.jitter, p.order[:, k], torch.full_like(p.order[:, k], -1))
        is_blend = (op >= 0) & (op < 3)
        f = torch.where(is_blend, factors.gather(1, op.clamp(0, 2)[:, None])[:, 0], one)
        gray = grayscale(x)
        ref = torch.where((op == 1).view(-1, 1, 1, 1), gray.mean((2, 3), keepdim=True), gray)
        ref = ref * (op != 0).view(-1, 1, 1, 1)
        x = _blend(x, ref, f)
        is_hue = op == 3
        x = torch.where(is_hue.view(-1, 1, 1, 1), adjust_hue(x, torch.where(is_hue, p.hue, 0 * one)), x)
    return x


def apply_params(images: Tensor, p: AugParams, size: int) -> Tensor:
    """Augment a uint8 (N, 3, H, W) batch with the given parameters; returns float in [0, 1]."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images shaped (N, 3, H, W), got {tuple(images.shape)}")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    n = x.shape[0]
    x0, y0, w, h = p.crop.unbind(1)
    # Crop + resize + flip as one affine sampling grid (normalised coords span [-1, 1]).
    sign = torch.where(p.flip, -1.0, 1.0).to(x.dtype)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = 2 * x0 + w - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * y0 + h - 1
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = _jitter(x, p)
    x = torch.where(p.gray.view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
    x = torch.where(p.solarize.view(-1, 1, 1, 1) & (x >= 0.5), 1 - x, x)
    return x


def normalize(x: Tensor, cfg: AugmentConfig) -> Tensor:
    mean = channel_constant(tuple(cfg.mean), x.device, x.dtype)
    std = channel_constant(tuple(cfg.std), x.device, x.dtype)
    return (x - mean) / std


def augment(
    images: Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None, size: int | None = None
) -> tuple[Tensor, AugParams]:
    """One augmented view of each image ([0, 1] floats, not normalised) and its parameters."""
    if images.ndim == 3:  # a single image
        images = images.unsqueeze(0)
    p = sample_params(images.shape[0], cfg, generator, images.device)
    return apply_params(images, p, size or cfg.size), p


def n_views(
    images: Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None, n: int | None = None,
    size: int | None = None,
) -> list[Tensor]:
    """The training views: `n` (default cfg.views) independent views of each image, the first cfg.full_views of them
    at the images' own size and the rest at `size` (default cfg.view_size), normalised for the network. One view
    after another from the same generator, so views 1 and 2 are exactly two_views' pair, and every run (and its
    exact resume) with two views draws what it always did."""
    sides = cfg.sides(n or cfg.views, size or cfg.view_size or cfg.size)
    return [normalize(augment(images, cfg, generator, side)[0], cfg) for side in sides]


def two_views(images: Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The training pair: two independent views, normalised for the network."""
    a, b = n_views(images, cfg, generator, 2)
    return a, b

