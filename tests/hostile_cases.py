"""Generated hostile and unusual image uploads for tests/test_hostile_uploads.py (no pytest here).

`cases()` returns every case with what the app must answer: a result whose status names the mode
and notes (and, where the picture is a plain colour, the colour the model sees), or a refusal that
names the problem. Variants (truncation points, bit flips) come from a fixed seed, so a run is
repeatable; the few whose outcome depends on where a flip lands accept either answer, as long as it
is a clear one.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

SEED = 20240610
ORIENT = 0x0112  # the EXIF orientation tag


@dataclass
class Case:
    name: str  # the upload's file name
    data: bytes
    expect: str  # "ok", "refused", "either" (a clear refusal or a result) or "gradio" (refused by gradio itself)
    text: str = ""  # ok: in the status (a note); refused: in the message
    mode: str | None = None  # ok: the original mode the status names
    colour: tuple | None = None  # ok: the plain colour the model sees (every pixel, give or take lossy coding)
    size: tuple | None = None  # ok: the original (width, height) the status names
    same_as: str | None = None  # ok: decodes to the same pixels as this case (EXIF rotation)


def enc(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def photo(w: int = 96, h: int = 64, seed: int = SEED) -> Image.Image:
    """A smooth, asymmetric picture (gradients and a bright corner): rotations and flips change it."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([255 * x / w, 255 * y / h, 128 + 100 * np.sin(x / 7) * np.cos(y / 5)], -1)
    rgb[: h // 4, : w // 4] = 250
    rgb += np.random.default_rng(seed).normal(0, 4, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(w: int, h: int, bits: int = 1, colour_type: int = 0, rows: bytes = b"") -> bytes:
    """A PNG that declares w x h pixels; `rows` (zlib) is its IDAT. The pixel check must refuse it unread."""
    ihdr = struct.pack(">IIBBBBB", w, h, bits, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows or zlib.compress(b"\0" * 64)) + \
        _chunk(b"IEND", b"")


def png_bomb(w: int, h: int) -> bytes:
    """A real 1-bit w x h PNG of zeros: a few tens of kB that would decode to w*h bytes of RGB."""
    c = zlib.compressobj(9)
    row = b"\0" * (1 + (w + 7) // 8)
    body = b"".join(c.compress(row) for _ in range(h)) + c.flush()
    return png_header_only(w, h, rows=body)


def text_bomb() -> bytes:
    """A small PNG with a zTXt chunk that inflates to 64 MB of text."""
    base = enc(Image.new("RGB", (8, 8), "red"), "PNG")
    ztxt = _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * (64 << 20), 9))
    return base[:33] + ztxt + base[33:]


def jpeg_with_size(data: bytes, w: int, h: int) -> bytes:
    """The JPEG with its frame header (SOF0) patched to claim w x h."""
    i = data.index(b"\xff\xc0")
    return data[: i + 5] + struct.pack(">HH", h, w) + data[i + 9:]


def gif_js_polyglot() -> bytes:
    """A GIF that is also JavaScript: 'GIF89a/*<image>*/=alert(1)//' (the screen width bytes open a comment)."""
    gif = bytearray(enc(Image.new("P", (12, 10), 3), "GIF"))
    gif[6:8] = b"/*"  # logical screen width 0x2A2F = 10799
    assert b"*/" not in bytes(gif)
    return bytes(gif) + b"*/=alert(1)//"


def tiff_second_page_without_width() -> bytes:
    """A two-page TIFF whose second page lost its ImageWidth tag: counting the pages raised TypeError."""
    pic = photo(16, 12)
    data = bytearray(enc(pic, "TIFF", save_all=True, append_images=[pic]))
    first = struct.unpack("<I", data[4:8])[0]
    n = struct.unpack("<H", data[first:first + 2])[0]
    second = struct.unpack("<I", data[first + 2 + 12 * n:first + 6 + 12 * n])[0]
    for i in range(struct.unpack("<H", data[second:second + 2])[0]):
        at = second + 2 + 12 * i
        if data[at:at + 2] == struct.pack("<H", 256):
            data[at:at + 2] = struct.pack("<H", 65000)  # an unknown tag in its place
    return bytes(data)


def truncated(data: bytes, fractions, name: str, ext: str, expect: str = "refused", text: str = "truncated"):
    return [Case(f"{name}_cut{int(100 * f)}.{ext}", data[: max(1, int(len(data) * f))], expect, text)
            for f in fractions]


def flipped(data: bytes, n: int, name: str, ext: str, rng: np.random.Generator, skip: int = 0):
    """n variants with 8 random bits flipped each (after `skip` header bytes): either answer, if clear."""
    out = []
    for k in range(n):
        b = bytearray(data)
        for pos in rng.integers(skip, len(b), 8):
            b[pos] ^= 1 << int(rng.integers(0, 8))
        out.append(Case(f"{name}_flip{k}.{ext}", bytes(b), "either"))
    return out


def exif(orientation: int) -> Image.Exif:
    e = Image.Exif()
    e[ORIENT] = orientation
    return e


def _modes() -> list[Case]:
    pic = photo()
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 255  # red, and fully transparent: composited on white
    pal_t = Image.new("P", (40, 40), 0)  # every pixel the transparent entry
    pal_t.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    deep = Image.fromarray(np.full((40, 40), 257 * 100, np.uint16))
    ints = Image.fromarray(np.arange(40 * 40, dtype=np.int32).reshape(40, 40) * 1000 - 5000)
    floats = Image.fromarray(np.full((40, 40), 0.5, np.float32))
    frames = [Image.new("RGB", (40, 40), c) for c in ("red", "blue", "green")]
    anim = dict(save_all=True, append_images=frames[1:], duration=50, loop=0)
    return [
        Case("gray.png", enc(Image.new("L", (40, 40), 77), "PNG"), "ok", "grayscale copied", "L", (77, 77, 77)),
        Case("gray.jpg", enc(Image.new("L", (40, 40), 77), "JPEG"), "ok", "grayscale copied", "L", (77, 77, 77)),
        Case("bw.png", enc(Image.new("1", (40, 40), 1), "PNG"), "ok", "black-and-white", "1", (255, 255, 255)),
        Case("rgba.png", enc(Image.fromarray(rgba), "PNG"), "ok", "composited on white", "RGBA", (255, 255, 255)),
        Case("rgba_opaque.png", enc(Image.new("RGBA", (40, 40), (0, 0, 255, 255)), "PNG"), "ok", "", "RGBA",
             (0, 0, 255)),
        Case("la.png", enc(Image.new("LA", (40, 40), (0, 0)), "PNG"), "ok", "composited on white", "LA",
             (255, 255, 255)),
        Case("palette.png", enc(pic.quantize(16), "PNG"), "ok", "P converted to RGB", "P"),
        Case("palette_transparent.png", enc(pal_t, "PNG", transparency=0), "ok", "composited on white", "P",
             (255, 255, 255)),
        Case("cmyk.jpg", enc(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"), "ok", "CMYK converted",
             "CMYK", (255, 0, 0)),
        Case("cmyk.tif", enc(Image.new("CMYK", (40, 40), (255, 0, 255, 0)), "TIFF"), "ok", "CMYK converted", "CMYK",
             (0, 255, 0)),
        Case("deep16.png", enc(deep, "PNG"), "ok", "16-bit image scaled to 8-bit", "I;16", (100, 100, 100)),
        Case("int32.tif", enc(ints, "TIFF"), "ok", "min-max scaled to 8-bit", "I"),
        Case("float.tif", enc(floats, "TIFF"), "ok", "float image scaled to 8-bit", "F", (128, 128, 128)),
        Case("anim.gif", enc(frames[0], "GIF", **anim), "ok", "first of 3 frames", "P", (255, 0, 0)),
        Case("anim.webp", enc(frames[0], "WEBP", lossless=True, **anim), "ok", "first of 3 frames", "RGB",
             (255, 0, 0)),
        Case("anim.png", enc(frames[0], "PNG", **anim), "ok", "first of 3 frames", "RGB", (255, 0, 0)),
        Case("one.png", enc(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG"), "ok", "resized from 1x1", "RGB",
             (255, 0, 0), (1, 1)),
        Case("one.jpg", enc(Image.new("RGB", (1, 1), (0, 0, 255)), "JPEG", quality=100), "ok", "resized from 1x1",
             "RGB", (0, 0, 255), (1, 1)),
        Case("exact32.png", enc(Image.new("RGB", (32, 32), (10, 20, 30)), "PNG"), "ok", "", "RGB", (10, 20, 30),
             (32, 32)),
        Case("thin.png", enc(Image.new("RGB", (1, 3000), (200, 100, 0)), "PNG"), "ok", "resized from 1x3000", "RGB",
             (200, 100, 0), (1, 3000)),
        Case("large_but_allowed.png", png_bomb(6000, 6000), "ok", "resized from 6000x6000", "1", (0, 0, 0),
             (6000, 6000)),
        Case("progressive.jpg", enc(pic, "JPEG", progressive=True), "ok", "resized from 96x64", "RGB"),
        Case("photo.bmp", enc(pic, "BMP"), "ok", "resized from 96x64", "RGB", size=(96, 64)),
        Case("photo.tif", enc(pic, "TIFF", compression="tiff_lzw"), "ok", "resized", "RGB", size=(96, 64)),
        Case("photo.webp", enc(pic, "WEBP", quality=80), "ok", "resized", "RGB", size=(96, 64)),
        Case("icon.ico", enc(pic, "ICO", sizes=[(48, 48)]), "ok", "", None),
    ]


def _exif() -> list[Case]:
    up = photo(48, 32)
    # the stored picture is the upright one turned the other way; the orientation tag says how to undo it
    stored = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
              2: Image.Transpose.FLIP_LEFT_RIGHT, 5: Image.Transpose.TRANSPOSE}
    out = [Case("upright.png", enc(up, "PNG"), "ok", "resized from 48x32", "RGB", size=(48, 32))]
    out += [Case(f"exif{o}.png", enc(up.transpose(t), "PNG", exif=exif(o)), "ok", "", "RGB", same_as="upright.png")
            for o, t in stored.items()]
    out.append(Case("upright.jpg", enc(up, "JPEG", quality=95), "ok", "", "RGB", size=(48, 32)))
    out.append(Case("exif6.jpg", enc(up.transpose(stored[6]), "JPEG", quality=95, exif=exif(6)), "ok", "", "RGB",
                    same_as="upright.jpg"))
    out.append(Case("exif_invalid9.jpg", enc(up, "JPEG", exif=exif(9)), "ok", "", "RGB", size=(48, 32)))
    junk = enc(up, "JPEG")
    app1 = b"Exif\0\0" + np.random.default_rng(SEED).bytes(200)
    out.append(Case("exif_garbage.jpg", junk[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + junk[2:],
                    "ok", "", "RGB", size=(48, 32)))
    return out


def _not_images() -> list[Case]:
    page = b"<!DOCTYPE html><html><body><script>fetch('/x?c='+document.cookie)</script></body></html>"
    svg = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
           b'<script>alert(1)</script><rect width="64" height="64" fill="red"/></svg>')
    png = enc(photo(), "PNG")
    jpg = enc(photo(), "JPEG")
    return [
        Case("empty.png", b"", "refused", "empty"),
        Case("empty.jpg", b"", "refused", "empty"),
        Case("notes.png", b"hello, I am text\n" * 20, "refused", "not an image"),
        Case("drawing.svg", svg, "refused", "SVG"),
        Case("page.png", page, "refused", "HTML"),
        Case("page.html", page, "gradio", "Invalid file type"),
        Case("random.jpg", np.random.default_rng(SEED).bytes(5000), "refused", "not an image"),
        Case("png_then_junk.png", png[:8] + np.random.default_rng(SEED + 1).bytes(3000), "refused",
             "damaged or invalid PNG"),
        Case("zero_width.png", png_header_only(0, 10), "refused", "damaged or invalid PNG"),
        Case("polyglot_html.png", png + page, "ok", "", "RGB", size=(96, 64)),
        Case("polyglot_js.jpg", jpg + b"\n;alert(document.domain)//", "ok", "", "RGB", size=(96, 64)),
        Case("polyglot_gif.gif", gif_js_polyglot(), "ok", "", "P", size=(10799, 10)),
        Case("script_in_text_chunk.png", enc(photo(), "PNG", pnginfo=_pnginfo(page)), "ok", "", "RGB",
             size=(96, 64)),
    ]


def _pnginfo(text: bytes):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", text.decode())
    return info


def _bombs() -> list[Case]:
    jpg = enc(photo(), "JPEG")
    gif = bytearray(enc(Image.new("P", (10, 10)), "GIF"))
    gif[6:10] = struct.pack("<HH", 20000, 20000)
    bmp = bytearray(enc(Image.new("RGB", (4, 4)), "BMP"))
    bmp[18:26] = struct.pack("<ii", 30000, 30000)
    return [
        Case("bomb.png", png_bomb(20000, 20000), "refused", "too large"),
        Case("huge_20000.jpg", jpeg_with_size(jpg, 20000, 20000), "refused", "too large"),
        Case("huge_20000.gif", bytes(gif), "refused", "too large"),
        Case("huge.bmp", bytes(bmp), "refused", "too large"),
        Case("wide_header.png", png_header_only(2**31 - 1, 1), "refused", ""),
        Case("text_bomb.png", text_bomb(), "refused", "too large"),
    ]


def _damaged() -> list[Case]:
    rng = np.random.default_rng(SEED)
    pic = photo(160, 120)
    jpg, png, webp, gif = (enc(pic, "JPEG", quality=90), enc(pic, "PNG"), enc(pic, "WEBP", quality=80),
                           enc(pic.convert("P"), "GIF"))
    out = truncated(jpg, (0.02, 0.3, 0.7), "photo", "jpg")
    out += truncated(png, (0.005, 0.02, 0.5, 0.95), "photo", "png")
    out += truncated(webp, (0.05, 0.5), "photo", "webp", text="")
    out += truncated(gif, (0.5,), "photo", "gif")
    out.append(Case("two_pages_no_width.tif", tiff_second_page_without_width(), "refused", "damaged"))
    out += flipped(jpg, 3, "photo", "jpg", rng, skip=700)
    out += flipped(png, 3, "photo", "png", rng, skip=33)
    out += flipped(webp, 2, "photo", "webp", rng, skip=30)
    return out


def cases() -> list[Case]:
    out = _modes() + _exif() + _not_images() + _bombs() + _damaged()
    names = [c.name for c in out]
    assert len(set(names)) == len(names), "case names must be unique"
    return out
