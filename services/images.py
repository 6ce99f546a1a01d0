"""Untrusted upload bytes (or a path) -> the (3, 32, 32) uint8 image the model sees.

Every bad input becomes a `BadImage` (a ValueError) whose message can be shown to a visitor as is.
The pixel limit is enforced here, per call, with PIL's decompression-bomb warning turned into an
error inside the call; PIL's global `Image.MAX_IMAGE_PIXELS` is never changed.
"""
from __future__ import annotations

import codecs
import io
import os
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vicreg.training.data import resize_center_crop

from .settings import MAX_PIXELS, MAX_UPLOAD_MB, upload_bytes

MAX_UPLOAD_BYTES = upload_bytes(MAX_UPLOAD_MB)  # an upload's size limit (a sidecar's is vicreg.runfiles.sidecar's)


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


ACCEPTED = "upload a PNG, JPEG, GIF, BMP, WebP or TIFF image"
RESAVE = "open it in an image editor, save it again as PNG or JPEG and upload that"
# What PIL's format plugins raise on crafted or damaged files besides OSError (seen fuzzing: TypeError
# "Missing dimensions" from a TIFF header, struct.error, IndexError, ...). Every one means "cannot decode".
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, AttributeError,
                 ZeroDivisionError, OverflowError, MemoryError, struct.error)
# leading bytes of the formats people upload, to say "a damaged PNG" rather than "not an image"
SIGNATURES = {b"\x89PNG": "PNG", b"\xff\xd8": "JPEG", b"GIF8": "GIF", b"BM": "BMP", b"II*\0": "TIFF",
              b"MM\0*": "TIFF", b"\0\0\1\0": "ICO"}


def _format(data: bytes) -> str | None:
    """The image format the leading bytes announce, if it is a common one."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((fmt for sig, fmt in SIGNATURES.items() if data.startswith(sig)), None)


def _kind(data: bytes) -> str | None:
    """What an unreadable upload looks like, for the message: a damaged image, or another kind of file."""
    if fmt := _format(data):
        return f"a damaged or invalid {fmt} file"
    head = data[:4096].lstrip().lower()
    if b"<svg" in head:
        return "an SVG drawing (vector graphics are not decoded here)"
    if head.startswith((b"<!doctype html", b"<html")) or b"<script" in head or b"<body" in head:
        return "an HTML page"
    if head.startswith(b"%pdf"):
        return "a PDF document"
    try:  # an incremental decoder accepts a character cut at the 4096-byte mark
        text = codecs.getincrementaldecoder("utf-8")().decode(data[:4096])
    except UnicodeDecodeError:
        return None
    return "a text file" if all(c.isprintable() or c.isspace() for c in text) else None


def _not_an_image(data: bytes) -> BadImage:
    kind = _kind(data)
    if kind is None:
        return BadImage(f"this file is not an image that can be read; {ACCEPTED}")
    if kind.startswith("a damaged"):
        return BadImage(f"this file looks like {kind}: its header cannot be read; {RESAVE}")
    return BadImage(f"this file is {kind}, not an image; {ACCEPTED}")


def _unreadable(e: Exception, fmt: str | None = None) -> BadImage:
    msg = " ".join(str(e).split())[:120]  # one short line: PIL's texts can carry bytes of the file
    if "runcated" in msg or "broken data stream" in msg or isinstance(e, EOFError):
        return BadImage("the image file is truncated or corrupt (an incomplete upload or download?); "
                        "upload the complete file")
    if "Decompressed data too large" in msg:  # a zTXt / iCCP chunk that inflates without bound
        return BadImage("the image carries metadata that is too large to read safely; save the picture again "
                        "without metadata (e.g. as a plain PNG or JPEG) and upload that")
    what = f"this {fmt} image" if fmt else "this image"
    return BadImage(f"{what} is damaged and cannot be decoded ({msg or type(e).__name__}); {RESAVE}")


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
            raise BadImage(f"cannot read the uploaded file ({e.strerror or type(e).__name__}); "
                           "please upload it again") from None
    if not data:
        raise BadImage("the file is empty (0 bytes); upload the image file again")
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
        raise _not_an_image(data) from None
    except DECODE_ERRORS as e:
        raise _unreadable(e, _format(data)) from None


def _first_frame_rgb(im: Image.Image, size: int, notes: list[str], too_big: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            frames = getattr(im, "n_frames", 1)  # counting frames parses them all: inside the try
            if frames > 1:
                im.seek(0)
                notes.append(f"animated image: using the first of {frames} frames")
            if im.format == "JPEG":
                im.draft(None, (2 * size, 2 * size))  # decode at reduced scale: big JPEGs stay fast
            im.load()
            return _to_rgb(ImageOps.exif_transpose(im), notes)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(too_big) from None
    except DECODE_ERRORS as e:
        raise _unreadable(e, im.format) from None


def decode_image(src: bytes | str | os.PathLike, size: int = 32, max_pixels: int = MAX_PIXELS,
                 max_bytes: int = MAX_UPLOAD_BYTES) -> Decoded:
    """Untrusted image -> (3, size, size) uint8: first frame of animations, EXIF orientation
    applied, converted to RGB, short side resized (bicubic) and centre-cropped like the dataset."""
    limit = f"limit {max_pixels / 1e6:.0f} megapixels"
    shrink = "; resize it to fewer pixels and upload it again"
    too_big = f"the image is too large to decode safely ({limit}){shrink}"
    notes: list[str] = []
    with _open(_read(src, max_bytes), too_big) as im:
        w, h = im.size
        if w < 1 or h < 1:
            raise BadImage(f"the image has no pixels ({w}x{h}); upload another image")
        if w * h > max_pixels:
            raise BadImage(f"the image is too large to decode safely ({limit}; this one is {w}x{h}){shrink}")
        mode, fmt = im.mode, im.format
        rgb = _first_frame_rgb(im, size, notes, too_big)
    if rgb.size != (size, size):
        notes.append(f"resized from {w}x{h} to {size}x{size} (short side, centre crop)")
        rgb = resize_center_crop(rgb, size)
    return Decoded(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy(), notes, (w, h), mode, fmt)
