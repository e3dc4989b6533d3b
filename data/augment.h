/*
 * augment.h: ImageDataGenerator-style augmentation (Keras semantics, DESIGN.md): one affine
 * transform per image about its centre, applied as a pull map with bilinear interpolation and
 * a fill mode, then a horizontal flip. Random parameters come from a per-sample RNG keyed by
 * (seed, epoch, index), so results do not depend on thread count or order.
 * Pixel parity with scipy.ndimage.affine_transform: tests/gen_augment.py, tests/test_augment.c.
 */
#ifndef ND_AUGMENT_H
#define ND_AUGMENT_H

#include "data/nd.h"

typedef enum {
    ND_FILL_NEAREST  = 0, // Keras's default
    ND_FILL_CONSTANT = 1, // cval
    ND_FILL_REFLECT  = 2, // scipy "reflect": d c b a | a b c d | d c b a
    ND_FILL_WRAP     = 3, // scipy "wrap"
} nd_fill;

nt_status nd_fill_parse(nt_ctx *ctx, const char *s, nd_fill *out);
const char *nd_fill_name(nd_fill f);

// Explicit parameters, as Keras's apply_transform takes them, except that pneumo's tx is
// horizontal and ty vertical (pixels); theta and shear in degrees; zx, zy zoom factors (1: none).
typedef struct nd_aug_params {
    double theta, tx, ty, shear, zx, zy;
    int flip; // horizontal flip after the transform
} nd_aug_params;

// The training flags, named as ImageDataGenerator's.
typedef struct nd_aug_cfg {
    double rotation_range;     // degrees, uniform in [-r, r]
    double width_shift_range;  // < 1: fraction of the width; >= 1: pixels
    double height_shift_range; // same, of the height
    double shear_range;        // degrees, uniform in [-s, s]
    double zoom_lo, zoom_hi;   // zx and zy drawn independently in [lo, hi]; 1,1: none
    int horizontal_flip;       // p = 0.5
    nd_fill fill_mode;
    double cval; // 0..255 (the fill value before rescaling)
    int keras_swap_shifts; // reproduce Keras >= 2.9, where width_shift_range moves vertically
} nd_aug_cfg;

void nd_aug_cfg_default(nd_aug_cfg *cfg); // no augmentation, fill nearest, cval 0
// True when cfg changes images at all (so callers can skip the work).
int nd_aug_active(const nd_aug_cfg *cfg);

// Draws the parameters for sample `index` of `epoch` (deterministic from seed, epoch, index) for
// an image of w x h.
void nd_aug_random(const nd_aug_cfg *cfg, uint64_t seed, uint64_t epoch, uint64_t index, int w,
                   int h, nd_aug_params *out);

// Applies p to src (8-bit RGB, w x h) into dst (w*h*3 floats on the 0..255 scale, as Keras
// transforms float arrays; not rounded): the pull map M = R T Sh Z about the centre (offset
// (h-1)/2, (w-1)/2), bilinear (order 1), fill mode and cval as scipy.ndimage.affine_transform;
// then the flip.
void nd_aug_apply(const nd_aug_params *p, nd_fill fill, double cval, const nd_image *src,
                  float *dst);
// Rounds a float image (0..255 scale, clamped) to 8 bits, e.g. for `pneumo augment --out`.
void nd_float_to_u8(const float *src, int64_t n, uint8_t *dst);

#endif
