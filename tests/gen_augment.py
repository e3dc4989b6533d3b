#!/usr/bin/python3
"""gen_augment.py: reference outputs for pneumo's augmentation (data/augment.c), computed the way
Keras's ImageDataGenerator.apply_transform computes them: apply_affine_transform (keras-preprocessing
1.1.2, that is Keras < 2.9) on a float32 image, per channel through
scipy.ndimage.affine_transform(order=1), then the horizontal flip. Not a test itself: it writes
tests/fixtures/augment.bin (format: tests/fixture.h), which tests/test_augment.c reads.

Run from the repository root with Debian's interpreter and packages (python3-numpy,
python3-scipy, python3-pil; the fixture was made with scipy 1.10.1, numpy 1.24.2, Pillow 9.4.0):

    /usr/bin/python3 tests/gen_augment.py

Input: an RGB image of 36 x 28 whose three channels are crops of three real chest X-rays from
data/samples/ (different crops, so that a channel mix-up shows), 8-bit values as floats.
Table: explicit transforms (rotations, fractional and whole-pixel shifts, a shift past the image,
shears, zooms below and above 1 and unequal, combinations, one with the flip) x the four fill
modes (constant with cval 40). For each, the output and the list of border pixels: pixels whose
source coordinate lies within BORDER_EPS of a point where the fill mode jumps (constant: the
edges 0 and n-1; wrap: every multiple of n-1). There a difference of one ulp in the coordinate,
which numpy's matrix products (BLAS) and C's need not agree on, picks a different side of the
jump, so the C test leaves those pixels out and reports them.

Fixture tensors:
  input                  [28, 36, 3]  the 8-bit source image as floats
  cval                   []           the constant-mode fill value
  params/NAME            [7]          theta, tx, ty, shear, zx, zy, flip in pneumo's terms
                                      (tx, zx horizontal; see data/augment.h)
  out/NAME/MODE          [28, 36, 3]  the Keras/scipy result, float32, 0..255 scale
  border/NAME/MODE       [k]          flat pixel indices row * 36 + col of the border pixels
"""
import os
import sys

import numpy as np
from PIL import Image
from scipy import ndimage

H, W = 28, 36
CVAL = 40.0
BORDER_EPS = 1e-6
MODES = ["nearest", "constant", "reflect", "wrap"]

# name, theta, tx, ty, shear, zx, zy, flip (pneumo's terms: tx/zx horizontal, ty/zy vertical)
CASES = [
    ("rot15", 15, 0, 0, 0, 1, 1, 0),
    ("rot-40", -40, 0, 0, 0, 1, 1, 0),
    ("rot90", 90, 0, 0, 0, 1, 1, 0),
    ("shift_frac", 0, 0.15 * W, -0.2 * H, 0, 1, 1, 0),
    ("shift_px", 0, -7, 4, 0, 1, 1, 0),
    ("shift_far", 0, 50, -37, 0, 1, 1, 0),
    ("shear20", 0, 0, 0, 20, 1, 1, 0),
    ("shear-35", 0, 0, 0, -35, 1, 1, 0),
    ("zoom_in", 0, 0, 0, 0, 0.7, 0.7, 0),
    ("zoom_out", 0, 0, 0, 0, 1.6, 1.6, 0),
    ("zoom_aniso", 0, 0, 0, 0, 0.8, 1.3, 0),
    ("combined", 12, 3.3, -2.1, 8, 0.9, 1.15, 0),
    ("combined_big", -30, -10, 6, -15, 1.4, 0.75, 0),
    ("combined_flip", 25, 2, 1.5, 5, 1.1, 0.95, 1),
]


# ---- Keras (keras-preprocessing 1.1.2, affine_transformations.py), restated ----


def transform_matrix_offset_center(matrix, x, y):
    o_x = float(x) / 2 - 0.5
    o_y = float(y) / 2 - 0.5
    offset_matrix = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset_matrix = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    return np.dot(np.dot(offset_matrix, matrix), reset_matrix)


def keras_matrix(theta, tx, ty, shear, zx, zy, h, w):
    """Keras's matrix; its tx and zx act on rows. None when Keras would not transform."""
    m = None
    if theta != 0:
        theta = np.deg2rad(theta)
        m = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    if tx != 0 or ty != 0:
        s = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
        m = s if m is None else np.dot(m, s)
    if shear != 0:
        shear = np.deg2rad(shear)
        s = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
        m = s if m is None else np.dot(m, s)
    if zx != 1 or zy != 1:
        z = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
        m = z if m is None else np.dot(m, z)
    if m is None:
        return None
    return transform_matrix_offset_center(m, h, w)


def apply_transform(x, theta, tx, ty, shear, zx, zy, flip, mode, cval):
    """x: float32 [H, W, C]. Keras's apply_transform with pneumo's parameters."""
    # pneumo's (tx, ty, zx, zy) are Keras < 2.9's (ty, tx, zy, zx): Keras's tx moves rows.
    m = keras_matrix(theta, ty, tx, shear, zy, zx, x.shape[0], x.shape[1])
    if m is not None:
        chans = [
            ndimage.affine_transform(x[:, :, k], m[:2, :2], m[:2, 2], order=1, mode=mode, cval=cval)
            for k in range(x.shape[2])
        ]
        x = np.stack(chans, axis=2)
    if flip:
        x = x[:, ::-1, :]
    return x, m


def border_pixels(m, mode, flip):
    """Flat indices (in the output, after the flip) whose source point is within BORDER_EPS of
    a jump of the fill mode."""
    if m is None or mode in ("nearest", "reflect"):
        return np.zeros(0)
    r, c = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    src = [m[0, 0] * r + m[0, 1] * c + m[0, 2], m[1, 0] * r + m[1, 1] * c + m[1, 2]]
    near = np.zeros((H, W), bool)
    for s, n in zip(src, (H, W)):
        if mode == "constant":
            near |= (np.abs(s) < BORDER_EPS) | (np.abs(s - (n - 1)) < BORDER_EPS)
        elif n > 1:  # wrap: jumps at every multiple of the period n-1
            near |= np.abs(s - np.round(s / (n - 1)) * (n - 1)) < BORDER_EPS
    if flip:
        near = near[:, ::-1]
    return np.flatnonzero(near).astype(np.float64)


# ---- the input: three real X-ray crops as R, G, B ----


def xray_crop(path, scale, top, left):
    im = Image.open(path).convert("L")
    if scale != 1:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BILINEAR)
    a = np.asarray(im)[top : top + H, left : left + W]
    assert a.shape == (H, W), (path, a.shape)
    return a


def make_input(root):
    s = os.path.join(root, "data", "samples")
    return np.stack(
        [
            xray_crop(os.path.join(s, "IM-0115-0001.jpeg"), 1, 90, 40),
            xray_crop(os.path.join(s, "person1000_bacteria_2931.jpeg"), 1, 100, 130),
            xray_crop(os.path.join(s, "NORMAL2-IM-1438-0001.jpeg"), 0.25, 120, 60),
        ],
        axis=2,
    ).astype(np.float32)


# ---- fixture file: tests/pnfx.py ----

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pnfx import write_fixture  # noqa: E402



def main():
    import scipy

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    x = make_input(root)
    tensors = [("input", x), ("cval", np.float64(CVAL))]
    print("scipy %s, numpy %s; input %dx%d" % (scipy.__version__, np.__version__, W, H))
    for name, theta, tx, ty, shear, zx, zy, flip in CASES:
        tensors.append(("params/" + name, np.array([theta, tx, ty, shear, zx, zy, flip], np.float64)))
        counts = []
        for mode in MODES:
            y, m = apply_transform(x, theta, tx, ty, shear, zx, zy, flip, mode, CVAL)
            assert y.dtype == np.float32 and y.shape == x.shape
            b = border_pixels(m, mode, flip)
            tensors.append(("out/%s/%s" % (name, mode), y))
            tensors.append(("border/%s/%s" % (name, mode), b))
            counts.append("%s %d" % (mode, b.size))
        print("  %-14s border pixels: %s" % (name, ", ".join(counts)))
    path = os.path.join(root, "tests", "fixtures", "augment.bin")
    n = write_fixture(path, tensors)
    print("wrote %s (%d tensors, %d bytes)" % (os.path.relpath(path, root), len(tensors), n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
