/*
 * gemm_amx_impl.h: the AMX (TDPBF16PS) kernels of the bf16 GEMM, written once over six tile
 * operations and compiled twice: by gemm_amx.c on the real instructions (-mamx-tile -mamx-bf16,
 * reached only after cpu.c has seen AMX and been granted the tile state), and by gemm_amx_emu.c
 * on a plain C model of them (so that every machine's tests run these kernels' packing, tiling
 * and tails; see there for what the model does). The includer defines:
 *
 *   AMX_NAME(f)           a unique name for this copy's function f
 *   AMX_LDCFG(cfg)        LDTILECFG from an amx_cfg
 *   AMX_ZERO(t)           TILEZERO tmm t
 *   AMX_LOAD(t, p, st)    TILELOADD tmm t from p, rows st bytes apart
 *   AMX_STORE(t, p, st)   TILESTORED tmm t to p, rows st bytes apart
 *   AMX_DP(c, a, b)       TDPBF16PS tmm c += tmm a * tmm b
 *   AMX_FIN               the table's nk_bf16_fin_fn (ukr_rows_fin finishes through it)
 *   AMX_CONVERT           the table's nk_bf16_convert_fn
 *   AMX_TABLE             the name of the nk_bf16_kernel table this copy defines
 *
 * (t, a, b, c are literal tile numbers, as the intrinsics need.)
 *
 * Tiles: the micro-tile is 32 rows x 32 columns of float32 in four accumulators (tmm0-3: rows
 * 0-15 / 16-31 x columns 0-15 / 16-31), the 2 x 2 block that makes each tile load feed two
 * TDPBF16PS. tmm4 and tmm5 hold A (16 rows of 16 k pairs = 64 bytes each), tmm6 and tmm7 B (16
 * k pairs of 16 columns each, read straight from nk_gemm_bf16_pack_b's panels, 128 bytes a pair
 * row). One step of 32 k: two A loads, two B loads, four TDPBF16PS (two when m <= 16).
 *
 * Packed A (this table's pack and pack_t): the same footprint as every bf16 table's (kp*mr words
 * per panel, 32 k of the panel at word (k/2)*mr), but row-major inside each 32-k chunk so that
 * a chunk's 16-row halves are tiles: word i*w + q of the chunk is row i's pair q, w = the chunk's
 * pairs (16 but in a tail). Unpacked rows (ukr_rows: bf16 activations) load straight from memory
 * by 16-row halves whose row pointers are evenly spaced (consecutive pixels); a half that is not
 * (it crosses an image row or a padding tap) is gathered into a 64-byte-row buffer first, and so
 * are the tails of fewer than 16 pairs, zero-padded (B's too, so that no pair past the block is
 * read).
 */

#define AMX_MR 32 // two 16-row tiles
#define AMX_NR NK_BF16_NR
#define AMX_CP 16 // k pairs per tile row (64 bytes)

_Static_assert(AMX_MR == 32 && AMX_MR <= NK_BF16_MR_MAX && AMX_NR == 32, "AMX: 2 x 2 tiles");

// The tile configuration this copy's kernels (and gemm_amx.c's peak loop) use, loaded once per
// thread (tile state is per thread).
static __thread int AMX_NAME(configured);

static inline void AMX_NAME(config)(void)
{
    if (AMX_NAME(configured)) return;
    amx_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette_id = 1;
    for (int t = 0; t < 8; t++) { // every tile 16 rows of 64 bytes
        cfg.rows[t]  = 16;
        cfg.colsb[t] = 64;
    }
    AMX_LDCFG(&cfg);
    AMX_NAME(configured) = 1;
}

// B's pairs [0, w) of a panel (NR words a pair row) into bb, zero-padded to AMX_CP rows.
static inline void AMX_NAME(b_tail)(const uint32_t *b, int w, uint32_t *bb)
{
    memset(bb, 0, sizeof(uint32_t) * AMX_CP * AMX_NR);
    memcpy(bb, b, sizeof(uint32_t) * (size_t)w * AMX_NR);
}

// One 32-k step: A's rows 0-15 from a (rows sa bytes apart), 16-31 from a2 (sa2; unused unless
// two), B from b (a panel, NR words a pair row).
static inline __attribute__((always_inline)) void AMX_NAME(step)(const uint32_t *a, int64_t sa,
                                                                 const uint32_t *a2, int64_t sa2,
                                                                 const uint32_t *b, int two)
{
    AMX_LOAD(4, a, sa);
    AMX_LOAD(6, b, AMX_NR * 4);
    AMX_LOAD(7, b + 16, AMX_NR * 4);
    AMX_DP(0, 4, 6);
    AMX_DP(1, 4, 7);
    if (two) {
        AMX_LOAD(5, a2, sa2);
        AMX_DP(2, 5, 6);
        AMX_DP(3, 5, 7);
    }
}

static inline void AMX_NAME(zero_c)(void)
{
    AMX_NAME(config)();
    AMX_ZERO(0);
    AMX_ZERO(1);
    AMX_ZERO(2);
    AMX_ZERO(3);
}

// The accumulators into t (MR x NR floats; rows 16-31 only when m > 16).
static inline void AMX_NAME(tiles_out)(float *t, int m)
{
    AMX_STORE(0, t, AMX_NR * 4);
    AMX_STORE(1, t + 16, AMX_NR * 4);
    if (m > 16) {
        AMX_STORE(2, t + 16 * AMX_NR, AMX_NR * 4);
        AMX_STORE(3, t + 16 * AMX_NR + 16, AMX_NR * 4);
    }
}

// t[0:m,0:n] (ld NR) = the accumulators + beta * C (beta == 0 never reads C). Whole rows (n ==
// NR, the common case) as loops of a constant count, which the compiler vectorises.
static inline void AMX_NAME(sum_out)(float *t, const float *c, int64_t ldc, float beta, int m,
                                     int n)
{
    AMX_NAME(tiles_out)(t, m);
    if (beta == 0.0f) return;
    const int full = n == AMX_NR;
    for (int i = 0; i < m; i++) {
        float *ti       = t + i * AMX_NR;
        const float *ci = c + i * ldc;
        if (full) {
            for (int j = 0; j < AMX_NR; j++)
                ti[j] = ti[j] + beta * ci[j];
        } else {
            for (int j = 0; j < n; j++)
                ti[j] = ti[j] + beta * ci[j];
        }
    }
}

// C[0:m,0:n] = the accumulators + beta * C.
static inline void AMX_NAME(store_c)(float *c, int64_t ldc, float beta, int m, int n)
{
    float t[AMX_MR * AMX_NR] __attribute__((aligned(64)));
    AMX_NAME(sum_out)(t, c, ldc, beta, m, n);
    for (int i = 0; i < m; i++)
        memcpy(c + i * ldc, t + i * AMX_NR, sizeof(float) * (size_t)n);
}

// nk_bf16_ukr_fn on this table's packed A (see the top of the file).
static void AMX_NAME(ukr)(int64_t kp, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                          float beta, int m, int n)
{
    uint32_t ab[AMX_MR * AMX_CP] __attribute__((aligned(64)));
    uint32_t bb[AMX_CP * AMX_NR] __attribute__((aligned(64)));
    const int two = m > 16;
    AMX_NAME(zero_c)();
    for (int64_t q = 0; q < kp; q += AMX_CP) {
        const int w        = kp - q < AMX_CP ? (int)(kp - q) : AMX_CP;
        const uint32_t *ap = a + q * AMX_MR, *bp = b + q * AMX_NR;
        if (w < AMX_CP) { // the tail chunk: [MR][w] words, widened to 64-byte rows
            memset(ab, 0, sizeof(ab));
            for (int i = 0; i < AMX_MR; i++)
                memcpy(ab + i * AMX_CP, ap + i * w, sizeof(uint32_t) * (size_t)w);
            AMX_NAME(b_tail)(bp, w, bb);
            ap = ab;
            bp = bb;
        }
        AMX_NAME(step)(ap, AMX_CP * 4, ap + 16 * AMX_CP, AMX_CP * 4, bp, two);
    }
    AMX_NAME(store_c)(c, ldc, beta, m, n);
}

// nk_bf16_pack_fn in this table's layout: w <= 32 k of MR rows, ceil(w/2) pairs a row.
static void AMX_NAME(pack)(const float *const *src, int w, uint32_t *dst)
{
    const int pairs = (w + 1) / 2;
    for (int i = 0; i < AMX_MR; i++) {
        uint32_t *d = dst + i * pairs;
        if (!src[i]) {
            memset(d, 0, sizeof(uint32_t) * (size_t)pairs);
            continue;
        }
        for (int q = 0; q < pairs; q++) {
            const uint32_t lo = nk_f32_to_bf16(src[i][2 * q]);
            const uint32_t hi = 2 * q + 1 < w ? nk_f32_to_bf16(src[i][2 * q + 1]) : 0;
            d[q]              = lo | hi << 16;
        }
    }
}

// nk_bf16_pack_t_fn in this table's layout: kc k of A stored [K, M], rows past m zero.
static void AMX_NAME(pack_t)(const float *src, int64_t lda, int m, int kc, uint32_t *dst)
{
    const int kp = (kc + 1) / 2;
    for (int q0 = 0; q0 < kp; q0 += AMX_CP) {
        const int w = kp - q0 < AMX_CP ? kp - q0 : AMX_CP;
        uint32_t *d = dst + (int64_t)q0 * AMX_MR;
        for (int q = 0; q < w; q++) {
            const int64_t k = 2 * (int64_t)(q0 + q);
            const float *r0 = src + k * lda, *r1 = k + 1 < kc ? r0 + lda : NULL;
            for (int i = 0; i < AMX_MR; i++) {
                const uint32_t lo = i < m ? nk_f32_to_bf16(r0[i]) : 0;
                const uint32_t hi = i < m && r1 ? nk_f32_to_bf16(r1[i]) : 0;
                d[i * w + q]      = lo | hi << 16;
            }
        }
    }
}

// The byte distance between a segment's consecutive row pointers when it is the same for the
// first n of them and positive (then tiles load them in place), else 0.
static inline int64_t AMX_NAME(row_stride)(const uint32_t *const *r, int n)
{
    const int64_t s = (int64_t)((const char *)r[1] - (const char *)r[0]);
    if (s <= 0) return 0;
    for (int i = 2; i < n; i++)
        if ((const char *)r[i] - (const char *)r[0] != (int64_t)i * s) return 0;
    return s;
}

// The accumulators of unpacked bf16 rows (nk_bf16_ukr_rows_fn's sum; pf unused: a tile load
// reads whole rows). Each 16-row half loads in place when its rows are evenly spaced (a half
// that crosses an image row or a padding tap is gathered).
static inline void AMX_NAME(rows_acc)(int nseg, const int *segp, const uint32_t *const *rows,
                                      const uint32_t *b, int m)
{
    uint32_t ab[AMX_MR * AMX_CP] __attribute__((aligned(64)));
    uint32_t bb[AMX_CP * AMX_NR] __attribute__((aligned(64)));
    const int two = m > 16;
    AMX_NAME(zero_c)();
    for (int s = 0; s < nseg; s++, rows += AMX_MR) {
        const int len = segp[s];
        int64_t st[2];
        for (int h = 0; h < 2; h++)
            st[h] = AMX_NAME(row_stride)(rows + 16 * h, 16);
        for (int q = 0; q < len; q += AMX_CP) {
            const int w        = len - q < AMX_CP ? len - q : AMX_CP;
            const uint32_t *bp = b + (int64_t)q * AMX_NR;
            if (w < AMX_CP) {
                memset(ab, 0, sizeof(ab));
                AMX_NAME(b_tail)(bp, w, bb);
                bp = bb;
            }
            const uint32_t *ah[2];
            int64_t sh[2];
            for (int h = 0; h < 1 + two; h++) {
                if (st[h] && w == AMX_CP) { // in place
                    ah[h] = rows[16 * h] + q;
                    sh[h] = st[h];
                    continue;
                }
                for (int i = 16 * h; i < 16 * h + 16; i++)
                    memcpy(ab + i * AMX_CP, rows[i] + q, sizeof(uint32_t) * (size_t)w);
                ah[h] = ab + 16 * h * AMX_CP;
                sh[h] = AMX_CP * 4;
            }
            if (!two) ah[1] = ah[0], sh[1] = sh[0];
            AMX_NAME(step)(ah[0], sh[0], ah[1], sh[1], bp, two);
        }
        b += (int64_t)len * AMX_NR;
    }
}

// nk_bf16_ukr_rows_fn.
static void AMX_NAME(ukr_rows)(int nseg, const int *segp, const uint32_t *const *rows,
                               const uint32_t *b, float *c, int64_t ldc, float beta, int m, int n,
                               int pf)
{
    AMX_NAME(rows_acc)(nseg, segp, rows, b, m);
    AMX_NAME(store_c)(c, ldc, beta, m, n);
}

// nk_bf16_ukr_rows_fin_fn: the sum (+ beta * c) in a stack tile, finished from there by the
// table's fin (AMX_FIN) into f->yb; c is not written.
static void AMX_NAME(ukr_rows_fin)(int nseg, const int *segp, const uint32_t *const *rows,
                                   const uint32_t *b, const float *c, int64_t ldc, float beta,
                                   int m, int n, int pf, const nk_bf16_fin_args *f)
{
    float t[AMX_MR * AMX_NR] __attribute__((aligned(64)));
    AMX_NAME(rows_acc)(nseg, segp, rows, b, m);
    AMX_NAME(sum_out)(t, c, ldc, beta, m, n);
    AMX_FIN(t, AMX_NR, m, n, f->bias, f->sc, f->sh, f->resb, f->ldr, f->relu, f->yb, f->ldy);
}

const nk_bf16_kernel AMX_TABLE = {
    .mr           = AMX_MR,
    .ukr          = AMX_NAME(ukr),
    .pack         = AMX_NAME(pack),
    .pack_t       = AMX_NAME(pack_t),
    .ukr_rows     = AMX_NAME(ukr_rows),
    .ukr_rows_fin = AMX_NAME(ukr_rows_fin),
    .convert      = AMX_CONVERT,
    .fin          = AMX_FIN,
};
