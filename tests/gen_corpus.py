#!/usr/bin/python3
"""Writes the bad-input corpus tests/corpus/ and the expected decodings
tests/fixtures/corpus_expected.bin (format of tests/fixture.h), read by tests/test_image.c.

Run from the repository root: /usr/bin/python3 tests/gen_corpus.py (needs PIL and numpy).
Deterministic: the same files on every run.

Good files get a tensor "img/NAME" [h, w, 3] holding what pneumo must decode: PIL's decoding
(Image.open(...).convert("RGB"), which is what Keras's load_img does) except for 16-bit PNGs,
where PIL clips 16-bit grey to 255 and truncates 16-bit colour, so the expected values are the
samples scaled with rounding, (v * 255 + 32895) >> 16 (libpng's png_set_scale_16). Bad files
(names starting "bad_") have no tensor: they must fail with NT_EFORMAT. Resize references:
"resize/src" [13, 17, 3] and PIL's resize of it, "resize/nearest_WxH" and "resize/bilinear_up_WxH".
"""
import io
import warnings
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_fixtures import write_fixture  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "corpus")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "corpus_expected.bin")

rng = np.random.default_rng(20240603)
warnings.simplefilter("ignore", UserWarning)  # PIL on palette + tRNS in bytes: expected here


# ---- a small PNG writer (PIL cannot write 16-bit RGBA, grey+alpha at 16 bits, or Adam7) ----

def chunk(kind, data):
    c = struct.pack(">I", len(data)) + kind + data
    return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def pack_rows(a, depth):
    """a: [h, w, ch] integer samples -> list of packed rows (bytes), big-endian for 16 bits."""
    h, w, ch = a.shape
    rows = []
    for y in range(h):
        r = a[y].reshape(-1)
        if depth == 16:
            rows.append(r.astype(">u2").tobytes())
        elif depth == 8:
            rows.append(r.astype(np.uint8).tobytes())
        else:  # 1, 2, 4 bits: pack MSB first
            per = 8 // depth
            out = bytearray((len(r) * depth + 7) // 8)
            for i, v in enumerate(r):
                out[i // per] |= int(v) << (8 - depth * (i % per + 1))
            rows.append(bytes(out))
    return rows


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def png_bytes(a, depth, color_type, plte=None, trns=None, interlace=False):
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, _ = a.shape
    raw = bytearray()
    if interlace:
        for x0, y0, dx, dy in ADAM7:
            sub = a[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            for r in pack_rows(sub, depth):
                raw += b"\x00" + r
    else:
        for r in pack_rows(a, depth):
            raw += b"\x00" + r
    out = b"\x89PNG\r\n\x1a\n"
    out += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, int(interlace)))
    if plte is not None:
        out += chunk(b"PLTE", bytes(np.asarray(plte, np.uint8).reshape(-1)))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += chunk(b"IDAT", zlib.compress(bytes(raw), 9))
    out += chunk(b"IEND", b"")
    return out


def scale16(v):
    return (np.asarray(v, np.int64) * 255 + 32895) >> 16


# ---- JPEG helpers ----

def jpeg_bytes(im, **kw):
    b = io.BytesIO()
    im.save(b, "JPEG", **kw)
    return b.getvalue()


def strip_app14(data):
    """Removes the Adobe APP14 segment."""
    p, out = 2, bytearray(data[:2])
    while p < len(data):
        m = data[p + 1]
        if m == 0xDA:
            out += data[p:]
            break
        n = struct.unpack(">H", data[p + 2:p + 4])[0]
        if m != 0xEE:
            out += data[p:p + 2 + n]
        p += 2 + n
    return bytes(out)


def insert_segment(data, marker, payload):
    """Puts a segment right after SOI."""
    return data[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def patch_sof(data, w, h):
    """Rewrites the frame size in the first SOFn segment."""
    p = 2
    while p < len(data):
        m = data[p + 1]
        n = struct.unpack(">H", data[p + 2:p + 4])[0]
        if m in (0xC0, 0xC1, 0xC2):
            return data[:p + 5] + struct.pack(">HH", h, w) + data[p + 9:]
        p += 2 + n
    raise ValueError("no SOF")


def pil_rgb(data):
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


def smooth(h, w, ch, seed):
    """A smooth test picture with some texture (JPEG-friendly, not constant)."""
    y, x = np.mgrid[0:h, 0:w]
    r = np.random.default_rng(seed)
    out = []
    for c in range(ch):
        a, b, ph = r.uniform(0.2, 0.9, 3)
        out.append(128 + 100 * np.sin(a * x + ph * 6) * np.cos(b * y) + r.normal(0, 6, (h, w)))
    return np.clip(np.stack(out, -1), 0, 255).astype(np.uint8)


def main():
    os.makedirs(CORPUS, exist_ok=True)
    files = {}      # name -> bytes
    expected = []   # (tensor name, array)

    def good(name, data, exp):
        files[name] = data
        exp = np.asarray(exp)
        if exp.ndim == 2:
            exp = np.repeat(exp[:, :, None], 3, axis=2)
        assert exp.shape[2] == 3, name
        expected.append(("img/" + name, exp.astype(np.float64)))

    H, W = 13, 17  # odd sizes: partial MCUs and odd chroma
    rgb8 = smooth(H, W, 3, 1)
    grey8 = smooth(H, W, 1, 2)[:, :, 0]

    # JPEG: baseline 4:2:0, baseline grey, progressive, 4:4:4, Adobe CMYK, plain CMYK, big XMP.
    d = jpeg_bytes(Image.fromarray(rgb8), quality=90)
    good("rgb.jpg", d, pil_rgb(d))
    rgb_jpg = d
    d = jpeg_bytes(Image.fromarray(grey8), quality=90)
    good("grey.jpg", d, pil_rgb(d))
    d = jpeg_bytes(Image.fromarray(rgb8), quality=85, progressive=True)
    assert b"\xff\xc2" in d
    good("progressive.jpg", d, pil_rgb(d))
    d = jpeg_bytes(Image.fromarray(grey8), quality=85, progressive=True)
    good("progressive_grey.jpg", d, pil_rgb(d))
    d = jpeg_bytes(Image.fromarray(rgb8), quality=95, subsampling=0)
    good("rgb444.jpg", d, pil_rgb(d))
    # CMYK: patches of pure inks so that "red decodes red" is visible in the numbers.
    cmyk = np.zeros((16, 16, 4), np.uint8)
    cmyk[:8, :8] = (0, 255, 255, 0)     # red
    cmyk[:8, 8:] = (255, 0, 255, 0)     # green
    cmyk[8:, :8] = (255, 255, 0, 0)     # blue
    cmyk[8:, 8:] = (0, 0, 0, 128)       # mid grey
    im = Image.fromarray(cmyk, "CMYK")
    d = jpeg_bytes(im, quality=100)      # PIL writes inverted CMYK with an Adobe marker
    assert b"Adobe" in d
    good("cmyk_adobe.jpg", d, pil_rgb(d))
    # PIL (so Keras) takes every CMYK JPEG as Adobe-inverted, marker or not; so does pneumo.
    # Without the APP14 marker the same samples must decode the same.
    d = strip_app14(d)
    assert b"Adobe" not in d
    good("cmyk_noadobe.jpg", d, pil_rgb(d))
    # A large XMP block before the image (some originals carry 100s of KB of metadata).
    xmp = b"http://ns.adobe.com/xap/1.0/\x00" + b"<x:xmpmeta>" + b" " * 30000 + b"</x:xmpmeta>"
    d = insert_segment(rgb_jpg, 0xE1, xmp)
    good("xmp.jpg", d, pil_rgb(d))
    # Stray bytes before EOI: libjpeg warns ("extraneous bytes before marker") and decodes, as PIL.
    assert rgb_jpg.endswith(b"\xff\xd9")
    d = rgb_jpg[:-2] + b"\x12\x34\x56" + rgb_jpg[-2:]
    good("warn_extraneous.jpg", d, pil_rgb(d))
    # An EXIF-like APP1 holding a whole JPEG thumbnail (with its own EOI) before the image.
    d = insert_segment(rgb_jpg, 0xE1, b"Exif\x00\x00" + jpeg_bytes(Image.fromarray(grey8[:8, :8])))
    good("thumbnail.jpg", d, pil_rgb(d))
    # The same, cut after the thumbnail's EOI: truncated, though an EOI is in the file.
    files["bad_truncated_after_thumbnail.jpg"] = d[: len(d) - 60]

    # PNG: 8-bit grey/RGB/RGBA, 1-bit grey, palette + tRNS, grey + alpha, 16-bit grey, 16-bit
    # RGB, 16-bit RGBA, 16-bit grey+alpha, interlaced.
    d = png_bytes(grey8, 8, 0)
    good("grey.png", d, pil_rgb(d))
    d = png_bytes(rgb8, 8, 2)
    good("rgb.png", d, pil_rgb(d))
    alpha = rng.integers(0, 256, (H, W, 1), dtype=np.uint8)
    d = png_bytes(np.concatenate([rgb8, alpha], 2), 8, 6)
    good("rgba.png", d, pil_rgb(d))
    bits = (grey8 > 128).astype(np.uint8)
    d = png_bytes(bits, 1, 0)
    good("grey1.png", d, pil_rgb(d))
    pal = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    ix = rng.integers(0, 6, (H, W), dtype=np.uint8)
    d = png_bytes(ix, 8, 3, plte=pal, trns=bytes([0, 128, 255]))
    good("palette_trns.png", d, pil_rgb(d))
    d = png_bytes(ix // 2, 2, 3, plte=pal[:4])
    good("palette2.png", d, pil_rgb(d))
    d = png_bytes(np.stack([grey8, alpha[:, :, 0]], 2), 8, 4)
    good("grey_alpha.png", d, pil_rgb(d))
    g16 = rng.integers(0, 65536, (H, W), dtype=np.int64)
    g16[0, :4] = (0, 65535, 128, 32767)  # the extremes and rounding edges
    d = png_bytes(g16, 16, 0)
    good("grey16.png", d, scale16(g16))
    c16 = rng.integers(0, 65536, (H, W, 3), dtype=np.int64)
    d = png_bytes(c16, 16, 2)
    good("rgb16.png", d, scale16(c16))
    a16 = rng.integers(0, 65536, (H, W, 4), dtype=np.int64)
    d = png_bytes(a16, 16, 6)
    good("rgba16.png", d, scale16(a16[:, :, :3]))
    ga16 = rng.integers(0, 65536, (H, W, 2), dtype=np.int64)
    d = png_bytes(ga16, 16, 4)
    good("grey_alpha16.png", d, scale16(ga16[:, :, 0]))
    d = png_bytes(rgb8, 8, 2, interlace=True)
    good("interlaced.png", d, pil_rgb(d))
    # A PNG whose IEND is missing: every pixel is there, so it decodes (as PIL does).
    full = png_bytes(rgb8, 8, 2)
    d = full[:-12]
    good("no_iend.png", d, rgb8)

    # Bad files: each must fail with NT_EFORMAT and a reason, never crash or allocate wildly.
    files["bad_empty.jpg"] = b""
    files["bad_random.jpg"] = rng.integers(0, 256, 700, dtype=np.uint8).tobytes()
    files["bad_text.png"] = b"this is a text file with an image's name\n"
    sos = rgb_jpg.find(b"\xff\xda")
    files["bad_truncated_header.jpg"] = rgb_jpg[: sos - 30]
    files["bad_truncated.jpg"] = rgb_jpg[: (sos + len(rgb_jpg)) // 2]  # inside the scan data
    prog = jpeg_bytes(Image.fromarray(rgb8), quality=85, progressive=True)
    files["bad_truncated_progressive.jpg"] = prog[: len(prog) * 7 // 10]
    files["bad_truncated.png"] = full[: len(full) * 6 // 10]
    files["bad_header_only.jpg"] = rgb_jpg[:20]
    files["bad_png_signature_only.png"] = full[:8]
    # An IDAT with a wrong CRC (a critical chunk: libpng refuses it).
    b = bytearray(full)
    i = b.find(b"IDAT")
    b[i + 8] ^= 0xFF
    files["bad_crc.png"] = bytes(b)
    # Decompression bombs: headers that claim huge sizes, with almost no data.
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    files["bad_bomb.png"] = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                             chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)  # 400 Mpixel: over the limit
    files["bad_bomb_grey.png"] = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                                  chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) +
                                  chunk(b"IEND", b""))
    files["bad_bomb.jpg"] = patch_sof(rgb_jpg, 65000, 65000)
    files["bad_zero_width.jpg"] = patch_sof(rgb_jpg, 0, 13)
    b = io.BytesIO()
    Image.fromarray(rgb8).save(b, "BMP")
    files["bad_bmp.bmp"] = b.getvalue()
    b = io.BytesIO()
    Image.fromarray(rgb8).save(b, "TIFF")
    files["bad_tiff.tif"] = b.getvalue()

    for name in sorted(os.listdir(CORPUS)):
        if name not in files:
            os.remove(os.path.join(CORPUS, name))
    for name, data in sorted(files.items()):
        with open(os.path.join(CORPUS, name), "wb") as f:
            f.write(data)

    # Resize references (PIL): nearest downscale and upscale, bilinear upscale (PIL's
    # bilinear filter is anti-aliased when downscaling, pneumo's is not, so only upscales).
    src = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    expected.append(("resize/src", src.astype(np.float64)))
    for w, h in ((7, 9), (40, 30), (17, 13 * 3), (5, 4), (34, 26)):
        r = np.array(Image.fromarray(src).resize((w, h), Image.NEAREST))
        expected.append(("resize/nearest_%dx%d" % (w, h), r.astype(np.float64)))
    for w, h in ((40, 30), (34, 26)):
        r = np.array(Image.fromarray(src).resize((w, h), Image.BILINEAR))
        expected.append(("resize/bilinear_up_%dx%d" % (w, h), r.astype(np.float64)))

    n = write_fixture(FIXTURE, expected)
    total = sum(len(v) for v in files.values())
    print("wrote %d corpus files (%d bytes) and %s (%d bytes, %d tensors)"
          % (len(files), total, os.path.relpath(FIXTURE, ROOT), n, len(expected)))


if __name__ == "__main__":
    main()
