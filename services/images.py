"""Untrusted upload bytes (or a path) -> the (3, 32, 32) uint8 image the model sees.

Every bad input becomes a `BadImage` (a ValueError) whose message can be shown to a visitor as is.
The pixel limit is enforced here, per call, with PIL's decompression-bomb warning turned into an
error inside the call; PIL's global `Image.MAX_IMAGE_PIXELS` is never changed.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vicreg.data import resize_center_crop

from .settings import MAX_PIXELS, MAX_UPLOAD_MB

MAX_BYTES = int(MAX_UPLOAD_MB * 1024 * 1024)


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


def _read(src: bytes | str | os.PathLike, max_bytes: int) -> bytes:
    too_large = f"the file is larger than {max_bytes / 2**20:.0f} MB; please upload a smaller image"
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        try:
            if os.path.getsize(src) > max_bytes:
                raise BadImage(too_large)
            with open(src, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BadImage(f"cannot read the uploaded file ({e.strerror or type(e).__name__})") from None
    if not data:
        raise BadImage("the file is empty")
    if len(data) > max_bytes:
        raise BadImage(too_large)
    return data


def _open(data: bytes, too_big: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(too_big) from None
    except UnidentifiedImageError:
        raise BadImage("this file is not an image that can be read; "
                       "upload a PNG, JPEG, GIF, BMP, WebP or TIFF") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise _unreadable(e) from None


def _first_frame_rgb(im: Image.Image, size: int, notes: list[str], too_big: str) -> Image.Image:
    frames = getattr(im, "n_frames", 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if frames > 1:
                im.seek(0)
                notes.append(f"animated image: using the first of {frames} frames")
            if im.format == "JPEG":
                im.draft(None, (2 * size, 2 * size))  # decode at reduced scale: big JPEGs stay fast
            im.load()
            return _to_rgb(ImageOps.exif_transpose(im), notes)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(too_big) from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError) as e:
        raise _unreadable(e) from None


def decode_image(src: bytes | str | os.PathLike, size: int = 32, max_pixels: int = MAX_PIXELS,
                 max_bytes: int = MAX_BYTES) -> Decoded:
    """Untrusted image -> (3, size, size) uint8: first frame of animations, EXIF orientation
    applied, converted to RGB, short side resized (bicubic) and centre-cropped like the dataset."""
    too_big = f"the image is too large to decode safely (limit {max_pixels / 1e6:.0f} megapixels)"
    notes: list[str] = []
    with _open(_read(src, max_bytes), too_big) as im:
        w, h = im.size
        if w < 1 or h < 1:
            raise BadImage("the image has no pixels")
        if w * h > max_pixels:
            raise BadImage(too_big + f"; this one is {w}x{h}")
        mode, fmt = im.mode, im.format
        rgb = _first_frame_rgb(im, size, notes, too_big)
    if rgb.size != (size, size):
        notes.append(f"resized from {w}x{h} to {size}x{size} (short side, centre crop)")
        rgb = resize_center_crop(rgb, size)
    return Decoded(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy(), notes, (w, h), mode, fmt)
