/*
 * gemm_amx_emu.c: the AMX kernels of gemm_amx_impl.h on a plain C model of the tile operations,
 * for any CPU: tests run it everywhere (nk_bf16_impl NK_BF16_AMX_EMU), so the kernels' packing,
 * tiling, gathers and tails are checked against nk_gemm_bf16_ref on machines without AMX. Slow
 * (one multiply-add at a time); never picked by nk_cpu_bf16().
 *
 * The model follows the Intel SDM's pseudo-code: LDTILECFG (palette 1) sets each tile's rows and
 * bytes per row and zeroes the tiles; TILELOADD reads rows x colsb bytes, zeroing the rest of the
 * tile; TILESTORED writes rows x colsb bytes; TDPBF16PS, for every row m of the destination and
 * column n: for each k pair in order, acc += a[m][2k] * b[k][2n], then acc += a[m][2k+1] *
 * b[k][2n+1] in float32 (the products are exact), bf16 denormal inputs read as zero and denormal
 * results flushed to zero (the Intrinsics Guide's form; the SDM's keeps the even and odd products
 * in separate sums, so the hardware's last bits may differ: the tests allow float32 summation
 * error). Shapes the hardware would fault on (#UD: a tile used before LDTILECFG, mismatched rows
 * or columns) trap here too, so a kernel bug cannot pass unseen.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

typedef struct {
    int rows, colsb;
    uint8_t d[16][64];
} emu_tile;

static __thread emu_tile emu_tmm[8];
static __thread int emu_cfg_loaded;

static void emu_ldcfg(const amx_cfg *c)
{
    if (c->palette_id != 1) __builtin_trap();
    for (int t = 0; t < 8; t++) {
        if (c->rows[t] > 16 || c->colsb[t] > 64) __builtin_trap();
        emu_tmm[t].rows  = c->rows[t];
        emu_tmm[t].colsb = c->colsb[t];
        memset(emu_tmm[t].d, 0, sizeof(emu_tmm[t].d));
    }
    emu_cfg_loaded = 1;
}

static emu_tile *emu_get(int t)
{
    emu_tile *x = &emu_tmm[t];
    if (!emu_cfg_loaded || x->rows == 0 || x->colsb == 0) __builtin_trap();
    return x;
}

static void emu_zero(int t)
{
    memset(emu_get(t)->d, 0, sizeof(emu_tmm[t].d));
}

static void emu_load(int t, const void *p, int64_t st)
{
    emu_tile *x = emu_get(t);
    memset(x->d, 0, sizeof(x->d));
    for (int r = 0; r < x->rows; r++)
        memcpy(x->d[r], (const char *)p + r * st, (size_t)x->colsb);
}

static void emu_store(int t, void *p, int64_t st)
{
    const emu_tile *x = emu_get(t);
    for (int r = 0; r < x->rows; r++)
        memcpy((char *)p + r * st, x->d[r], (size_t)x->colsb);
}

// A bf16 as float32, a denormal as zero of its sign.
static inline float emu_bf16(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    if ((h & 0x7f80u) == 0) h &= 0x8000u;
    return nk_bf16_to_f32(h);
}

static inline float emu_ftz(float v)
{
    return fabsf(v) < FLT_MIN ? copysignf(0.0f, v) : v;
}

// A tile's rows as bf16 pairs widened to float32: f[r][2q + e] (r < rows, q < colsb / 4).
static void emu_widen(const emu_tile *x, float f[16][32])
{
    for (int r = 0; r < x->rows; r++)
        for (int e = 0; e < x->colsb / 2; e++)
            f[r][e] = emu_bf16(x->d[r] + 2 * e);
}

static void emu_dp(int tc, int ta, int tb)
{
    emu_tile *c       = emu_get(tc);
    const emu_tile *a = emu_get(ta), *b = emu_get(tb);
    const int K = a->colsb / 4, N = c->colsb / 4;
    if (a->colsb % 4 || b->rows != K || c->rows != a->rows || c->colsb != b->colsb)
        __builtin_trap();
    float af[16][32], bf[16][32];
    emu_widen(a, af);
    emu_widen(b, bf);
    for (int m = 0; m < c->rows; m++) {
        float acc[16]; // row m, all columns at once (each column's sum still in k order)
        memcpy(acc, c->d[m], 4 * (size_t)N);
        for (int k = 0; k < K; k++)
            for (int n = 0; n < N; n++) {
                acc[n] = emu_ftz(acc[n] + af[m][2 * k] * bf[k][2 * n]);
                acc[n] = emu_ftz(acc[n] + af[m][2 * k + 1] * bf[k][2 * n + 1]);
            }
        memcpy(c->d[m], acc, 4 * (size_t)N);
    }
}

#define AMX_NAME(f)         amx_emu_##f
#define AMX_LDCFG(cfg)      emu_ldcfg(cfg)
#define AMX_ZERO(t)         emu_zero(t)
#define AMX_LOAD(t, p, st)  emu_load(t, p, st)
#define AMX_STORE(t, p, st) emu_store(t, p, st)
#define AMX_DP(c, a, b)     emu_dp(c, a, b)
#define AMX_FIN             nk_bf16_fin_scalar
#define AMX_CONVERT         nk_bf16_convert_scalar
#define AMX_TABLE           nk_bf16_kernel_amx_emu
#include "kernels/cpu/gemm_amx_impl.h"
