/*
 * augment.h: ImageDataGenerator-style augmentation (Keras semantics, DESIGN.md): one affine
 * transform per image about its centre, applied as a pull map with bilinear interpolation and
 * a fill mode, then a horizontal flip. Random parameters come from a per-sample RNG keyed by
 * (seed, epoch, index), so results do not depend on thread count or order.
 * Not here: resizing (nd.h) and preprocessing (rescale/caffe/torch, applied after this).
 * Pixel parity with scipy.ndimage.affine_transform: tests/gen_augment.py, tests/test_augment.c.
 */
#ifndef ND_AUGMENT_H
#define ND_AUGMENT_H

#include "data/nd.h"

// Fill modes, exactly as scipy.ndimage.affine_transform (order 1) of scipy 1.6 and later does
// them (checked against Debian 12's scipy 1.10), for a source coordinate c on an axis of n
// pixels (pixel centres at 0 .. n-1):
//   nearest   c is clamped to [0, n-1]: a a a | a b c d | d d d (Keras's default)
//   constant  c outside [0, n-1] on either axis gives cval, with no blending towards cval past
//             the edge (that is scipy's "grid-constant")
//   reflect   half-sample symmetric, period 2n: d c b a | a b c d | d c b a
//   wrap      scipy's "wrap", periodic with period n-1, not n: a c outside [0, n-1] moves by
//             whole multiples of n-1 into it, so the first and last pixels are the same point
//             and c = n-1+t reads between pixels 0 and 1. scipy's clean periodic mode is
//             "grid-wrap"; Keras asks for "wrap" and so gets this.
typedef enum {
    ND_FILL_NEAREST  = 0,
    ND_FILL_CONSTANT = 1,
    ND_FILL_REFLECT  = 2,
    ND_FILL_WRAP     = 3,
} nd_fill;

// Parses "nearest", "constant", "reflect" or "wrap". NT_EINVAL (naming what arrived) otherwise;
// *out is then unchanged. ctx may be NULL.
nt_status nd_fill_parse(nt_ctx *ctx, const char *s, nd_fill *out);
// The name nd_fill_parse accepts; "?" for a value outside the enum.
const char *nd_fill_name(nd_fill f);

// Explicit parameters, as Keras's apply_transform takes them, with x horizontal (columns) and
// y vertical (rows) throughout:
//   theta  rotation in degrees; positive turns the picture clockwise on screen (Keras < 2.9's
//          matrix [[cos, -sin], [sin, cos]] in (row, col) coordinates)
//   tx, ty shift in pixels, horizontal and vertical; as a pull map, positive tx reads from the
//          right, so the picture moves left (and positive ty moves it up)
//   shear  degrees; Keras's [[1, -sin s], [0, cos s]] in (row, col) coordinates
//   zx, zy zoom factors, horizontal and vertical (1: none); as a pull map, > 1 shows more of the
//          scene (the picture shrinks), < 1 enlarges it
//   flip   horizontal flip, after the transform
// Keras < 2.9's apply_affine_transform applies its tx and zx to rows and ty, zy to columns;
// pneumo's (tx, ty, zx, zy) are that function's (ty, tx, zy, zx).
typedef struct nd_aug_params {
    double theta, tx, ty, shear, zx, zy;
    int flip;
} nd_aug_params;

// The identity: zeros, zoom 1, no flip.
void nd_aug_params_identity(nd_aug_params *p);

// The training flags, named as ImageDataGenerator's. Ranges are magnitudes (a negative range
// acts as its absolute value, as numpy's uniform(-r, r) does).
typedef struct nd_aug_cfg {
    double rotation_range; // degrees: theta uniform in [-r, r)
    // Horizontal shift: r < 1: uniform in [-r, r) times the width; r >= 1 and integral (Keras's
    // int): whole pixels k * s with k uniform in 0 .. r-1 and s = -1 or +1 with p 1/2 each (so
    // 1 gives no shift, as in Keras); r >= 1 with a fraction: uniform pixels in [-r, r).
    double width_shift_range;
    double height_shift_range; // the same, vertical, of the height
    double shear_range;        // degrees: shear uniform in [-s, s)
    double zoom_lo, zoom_hi;   // zx and zy drawn independently in [lo, hi); 1,1: none (Keras's
                               // zoom_range z is lo = 1-z, hi = 1+z)
    int horizontal_flip;       // flip with p = 0.5
    nd_fill fill_mode;
    double cval;           // 0..255 (the fill value before rescaling)
    int keras_swap_shifts; // reproduce Keras >= 2.9, where width_shift_range (times the width)
                           // moves vertically and height_shift_range horizontally; only the
                           // shifts are swapped (Keras >= 2.9 also mirrors rotation and shear,
                           // which does not change their distribution except the shear's axis)
} nd_aug_cfg;

void nd_aug_cfg_default(nd_aug_cfg *cfg); // no augmentation, fill nearest, cval 0
// True when cfg changes images at all (so callers can skip the work).
int nd_aug_active(const nd_aug_cfg *cfg);

// Draws the parameters for sample `index` of `epoch` for an image of w x h, as Keras's
// get_random_transform does (Keras < 2.9 meaning of the shift ranges unless keras_swap_shifts).
// A pure function of (cfg, seed, epoch, index, w, h): each parameter reads its own slot of
// nk_u01 under a key mixed (nk_mix64) from seed, epoch and index, so the same triple gives the
// same parameters on any thread, in any order, and turning one range on or off leaves the
// others' draws unchanged. Disabled ranges give exactly 0 (zoom 1, no flip). Thread-safe.
void nd_aug_random(const nd_aug_cfg *cfg, uint64_t seed, uint64_t epoch, uint64_t index, int w,
                   int h, nd_aug_params *out);

// Applies p to src (8-bit RGB, w x h) into dst (w*h*3 floats on the 0..255 scale, as Keras
// transforms float arrays; not rounded): the pull map M = R T Sh Z about the centre (offset
// (h-1)/2, (w-1)/2), bilinear (order 1), fill mode and cval as scipy.ndimage.affine_transform;
// then the flip. As in Keras, a transform part equal to the identity (theta 0, tx = ty = 0,
// shear 0, zx = zy = 1) is left out of M, and when all are, dst is src converted exactly.
// A source coordinate that is not finite gives cval (any fill mode); coordinates beyond
// +-1e15 pixels are clamped there. src and dst must not overlap. Cannot fail; thread-safe.
// Parity with Keras + scipy 1.10 is float32 rounding (under 1e-7 of full scale, measured by
// tests/test_augment.c) except at border cases: a pixel whose source coordinate lies within a
// few ulps of a jump of the fill mode (constant: 0 and n-1; wrap: every multiple of n-1), such
// as an edge row under a 90-degree rotation, may land on the other side of the jump than
// numpy's arithmetic puts it, and then takes cval (or the wrapped pixel) where scipy takes the
// edge pixel, or the reverse. tests/gen_augment.py lists those pixels and the test skips them.
void nd_aug_apply(const nd_aug_params *p, nd_fill fill, double cval, const nd_image *src,
                  float *dst);
// Rounds a float image (0..255 scale, clamped; NaN gives 0) to 8 bits, halves upwards, e.g.
// for `pneumo augment --out`.
void nd_float_to_u8(const float *src, int64_t n, uint8_t *dst);

#endif
