/*
 * augment.c: ImageDataGenerator-style augmentation: Keras's random parameters from a
 * counter-based per-sample RNG, Keras's affine matrix, and scipy.ndimage.affine_transform's
 * order-1 resampling with its fill modes (scipy >= 1.6, as Debian 12's 1.10 does it).
 * Not the resize or the preprocessing. Parity tests: tests/test_augment.c against the fixtures of
 * tests/gen_augment.py; the command that shows the result is cmd/augment.c.
 */
#include "data/augment.h"
#include "kernels/nk.h"

#include <math.h>
#include <string.h>

// ---- names ----

static const char *const fill_names[] = {"nearest", "constant", "reflect", "wrap"};

nt_status nd_fill_parse(nt_ctx *ctx, const char *s, nd_fill *out)
{
    for (int f = ND_FILL_NEAREST; f <= ND_FILL_WRAP; f++)
        if (s && strcmp(s, fill_names[f]) == 0) {
            *out = (nd_fill)f;
            return NT_OK;
        }
    return nt_ctx_seterr(ctx, NT_EINVAL,
                         "fill mode: expected nearest, constant, reflect or wrap, got \"%s\"",
                         s ? s : "");
}

const char *nd_fill_name(nd_fill f)
{
    return (unsigned)f <= ND_FILL_WRAP ? fill_names[f] : "?";
}

// ---- configuration ----

void nd_aug_params_identity(nd_aug_params *p)
{
    memset(p, 0, sizeof(*p));
    p->zx = p->zy = 1.0;
}

void nd_aug_cfg_default(nd_aug_cfg *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->zoom_lo = cfg->zoom_hi = 1.0;
    cfg->fill_mode              = ND_FILL_NEAREST;
}

static int zoom_active(const nd_aug_cfg *cfg)
{
    return !(cfg->zoom_lo == 1.0 && cfg->zoom_hi == 1.0);
}

int nd_aug_active(const nd_aug_cfg *cfg)
{
    return cfg->rotation_range != 0 || cfg->width_shift_range != 0 ||
           cfg->height_shift_range != 0 || cfg->shear_range != 0 || zoom_active(cfg) ||
           cfg->horizontal_flip;
}

// ---- random parameters ----

// One nk_u01 slot per draw, fixed, so that enabling one range never moves another's draw.
enum {
    SLOT_THETA = 0,
    SLOT_SHIFT_X,
    SLOT_SHIFT_X_SIGN,
    SLOT_SHIFT_Y,
    SLOT_SHIFT_Y_SIGN,
    SLOT_SHEAR,
    SLOT_ZX,
    SLOT_ZY,
    SLOT_FLIP,
};

// The per-sample key. Each stage goes through the splitmix64 finaliser, so neighbouring seeds,
// epochs and indices give unrelated streams; "augment" in ASCII keeps this stream apart from
// other users of the same run seed (shuffling, dropout).
static uint64_t aug_key(uint64_t seed, uint64_t epoch, uint64_t index)
{
    uint64_t k = nk_mix64(seed + 0x0061756776656e74ULL);
    k          = nk_mix64(k ^ nk_mix64(epoch + NK_GOLDEN));
    return nk_mix64(k ^ nk_mix64(index + 2 * NK_GOLDEN));
}

static double uniform(uint64_t key, int slot, double lo, double hi)
{
    return lo + (hi - lo) * (double)nk_u01(key, (uint64_t)slot);
}

// One shift as Keras's get_random_transform draws it (see nd_aug_cfg): range r, image side n.
static double draw_shift(uint64_t key, int slot, double r, int n)
{
    r = fabs(r);
    if (r == 0) return 0;
    if (r < 1) return uniform(key, slot, -r, r) * n;
    if (r == floor(r) && r < 9007199254740992.0) {
        // np.random.choice(r) * np.random.choice([-1, 1])
        double k = floor((double)nk_u01(key, (uint64_t)slot) * r);
        if (k > r - 1) k = r - 1;
        return nk_u01(key, (uint64_t)slot + 1) < 0.5f ? -k : k;
    }
    return uniform(key, slot, -r, r);
}

void nd_aug_random(const nd_aug_cfg *cfg, uint64_t seed, uint64_t epoch, uint64_t index, int w,
                   int h, nd_aug_params *out)
{
    uint64_t key = aug_key(seed, epoch, index);
    nd_aug_params_identity(out);
    double rr = fabs(cfg->rotation_range), sr = fabs(cfg->shear_range);
    if (rr != 0) out->theta = uniform(key, SLOT_THETA, -rr, rr);
    // Keras < 2.9: width_shift_range * width moves horizontally. Keras >= 2.9 applies its tx
    // (drawn from height_shift_range * height) to columns, so the two trade places.
    double xr = cfg->keras_swap_shifts ? cfg->height_shift_range : cfg->width_shift_range;
    double yr = cfg->keras_swap_shifts ? cfg->width_shift_range : cfg->height_shift_range;
    int xn = cfg->keras_swap_shifts ? h : w, yn = cfg->keras_swap_shifts ? w : h;
    out->tx = draw_shift(key, SLOT_SHIFT_X, xr, xn);
    out->ty = draw_shift(key, SLOT_SHIFT_Y, yr, yn);
    if (sr != 0) out->shear = uniform(key, SLOT_SHEAR, -sr, sr);
    if (zoom_active(cfg)) {
        out->zx = uniform(key, SLOT_ZX, cfg->zoom_lo, cfg->zoom_hi);
        out->zy = uniform(key, SLOT_ZY, cfg->zoom_lo, cfg->zoom_hi);
    }
    out->flip = cfg->horizontal_flip && nk_u01(key, SLOT_FLIP) < 0.5f;
}

// ---- the affine matrix (Keras's apply_affine_transform, in (row, col) coordinates) ----

typedef double mat3[3][3];

static void mat3_mul(mat3 a, mat3 b) // a = a . b
{
    mat3 r;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double s = 0;
            for (int k = 0; k < 3; k++)
                s += a[i][k] * b[k][j];
            r[i][j] = s;
        }
    memcpy(a, r, sizeof(r));
}

// Builds M = R . T . Sh . Z with only the parts Keras includes, then offsets it to the centre
// (transform_matrix_offset_center: o = size/2 - 0.5). Returns 0 when every part is the identity
// (Keras then leaves the image untouched).
static int keras_matrix(const nd_aug_params *p, int w, int h, mat3 m)
{
    static const double deg = 3.14159265358979323846 / 180.0; // np.deg2rad
    int have                = 0;
    mat3 id                 = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
    memcpy(m, id, sizeof(mat3));
    if (p->theta != 0) {
        double t = p->theta * deg;
        mat3 r   = {{cos(t), -sin(t), 0}, {sin(t), cos(t), 0}, {0, 0, 1}};
        memcpy(m, r, sizeof(mat3));
        have = 1;
    }
    if (p->tx != 0 || p->ty != 0) {
        mat3 t = {{1, 0, p->ty}, {0, 1, p->tx}, {0, 0, 1}}; // rows: ty, columns: tx
        mat3_mul(m, t);
        have = 1;
    }
    if (p->shear != 0) {
        double s = p->shear * deg;
        mat3 sh  = {{1, -sin(s), 0}, {0, cos(s), 0}, {0, 0, 1}};
        mat3_mul(m, sh);
        have = 1;
    }
    if (p->zx != 1 || p->zy != 1) {
        mat3 z = {{p->zy, 0, 0}, {0, p->zx, 0}, {0, 0, 1}}; // rows: zy, columns: zx
        mat3_mul(m, z);
        have = 1;
    }
    if (!have) return 0;
    double orow = (double)h / 2 - 0.5, ocol = (double)w / 2 - 0.5;
    mat3 off = {{1, 0, orow}, {0, 1, ocol}, {0, 0, 1}};
    mat3 rst = {{1, 0, -orow}, {0, 1, -ocol}, {0, 0, 1}};
    mat3_mul(off, m);
    mat3_mul(off, rst);
    memcpy(m, off, sizeof(mat3));
    return 1;
}

// ---- resampling (scipy.ndimage's order-1 geometric transform) ----

// The two taps and weights of source coordinate c on an axis of n pixels under a fill mode.
// Returns 0 when the point takes cval.
typedef struct tap2 {
    int64_t i0, i1;
    double w0, w1;
} tap2;

#define COORD_LIMIT 1e15 // far beyond any image; keeps floor() and the modulo in int64 range

static int axis_taps(double c, int64_t n, nd_fill fill, tap2 *t)
{
    if (!isfinite(c)) return 0;
    if (fill == ND_FILL_CONSTANT && (c < 0 || c > (double)(n - 1))) return 0;
    if (c > COORD_LIMIT) c = COORD_LIMIT;
    if (c < -COORD_LIMIT) c = -COORD_LIMIT;
    if (fill == ND_FILL_REFLECT) {
        // Interpolate the half-sample symmetric extension: both taps are mapped into the image.
        double f  = floor(c);
        int64_t i = (int64_t)f, p2 = 2 * n;
        int64_t a = i % p2, b = (i + 1) % p2;
        if (a < 0) a += p2;
        if (b < 0) b += p2;
        t->i0 = a >= n ? p2 - 1 - a : a;
        t->i1 = b >= n ? p2 - 1 - b : b;
        t->w1 = c - f;
        t->w0 = 1 - t->w1;
        return 1;
    }
    if (fill == ND_FILL_WRAP) {
        // scipy's map_coordinate for "wrap" (period n-1), integer arithmetic as there.
        int64_t sz = n - 1;
        if (n <= 1)
            c = 0;
        else if (c < 0)
            c += (double)(sz * ((int64_t)(-c / (double)sz) + 1));
        else if (c > (double)sz)
            c -= (double)(sz * (int64_t)(c / (double)sz));
    }
    // nearest, constant (inside), and wrap after the mapping: clamp, then the two taps.
    if (c < 0) c = 0;
    if (c > (double)(n - 1)) c = (double)(n - 1);
    double f = floor(c);
    t->i0    = (int64_t)f;
    t->i1    = t->i0 + 1 < n ? t->i0 + 1 : n - 1;
    t->w1    = c - f;
    t->w0    = 1 - t->w1;
    return 1;
}

static void flip_rows(float *dst, int w, int h)
{
    for (int r = 0; r < h; r++) {
        float *row = dst + (int64_t)r * w * 3;
        for (int a = 0, b = w - 1; a < b; a++, b--)
            for (int k = 0; k < 3; k++) {
                float tmp      = row[a * 3 + k];
                row[a * 3 + k] = row[b * 3 + k];
                row[b * 3 + k] = tmp;
            }
    }
}

void nd_aug_apply(const nd_aug_params *p, nd_fill fill, double cval, const nd_image *src,
                  float *dst)
{
    const int w = src->w, h = src->h;
    const uint8_t *s = src->rgb;
    mat3 m;
    if (!keras_matrix(p, w, h, m)) {
        for (int64_t i = 0; i < (int64_t)w * h * 3; i++)
            dst[i] = (float)s[i];
    } else {
        for (int r = 0; r < h; r++)
            for (int c = 0; c < w; c++) {
                // The source point, summed in scipy's order: row * m0 + col * m1 + offset.
                double sr = 0, sc = 0;
                sr += r * m[0][0];
                sr += c * m[0][1];
                sr += m[0][2];
                sc += r * m[1][0];
                sc += c * m[1][1];
                sc += m[1][2];
                float *o = dst + ((int64_t)r * w + c) * 3;
                tap2 a, b;
                if (!axis_taps(sr, h, fill, &a) || !axis_taps(sc, w, fill, &b)) {
                    o[0] = o[1] = o[2] = (float)cval;
                    continue;
                }
                const uint8_t *p00 = s + (a.i0 * w + b.i0) * 3, *p01 = s + (a.i0 * w + b.i1) * 3;
                const uint8_t *p10 = s + (a.i1 * w + b.i0) * 3, *p11 = s + (a.i1 * w + b.i1) * 3;
                for (int k = 0; k < 3; k++)
                    o[k] = (float)(a.w0 * (b.w0 * p00[k] + b.w1 * p01[k]) +
                                   a.w1 * (b.w0 * p10[k] + b.w1 * p11[k]));
            }
    }
    if (p->flip) flip_rows(dst, w, h);
}

void nd_float_to_u8(const float *src, int64_t n, uint8_t *dst)
{
    for (int64_t i = 0; i < n; i++) {
        float v = src[i];
        dst[i]  = !(v > 0) ? 0 : v >= 255 ? 255 : (uint8_t)(v + 0.5f);
    }
}
