/*
 * gemm_avx2.c: the AVX2+FMA SGEMM micro-kernels (MR x NR fp32 register block, broadcast A,
 * vector B: 6 x 16, 12 ymm accumulators) and their packers, plus the 256-bit FMA peak loop: the
 * same kernels as gemm_avx512_impl.h (packed, batch-reduce rows for the implicit-GEMM
 * convolutions, the fused epilogue), in 256-bit vectors; weight gradients pack (see the table).
 * AVX2 has no mask registers: ragged right edges go through VMASKMOV, full tiles through plain
 * loads and stores (masked stores are slow on AMD). Compiled with -mavx2 -mfma; only reached
 * through nk_gemm_kernel_avx2 after run-time detection (cpu.c). Driver: gemm.c; tests in
 * tests/test_gemm.c and tests/test_ops.c.
 */
#include <immintrin.h>
#include <stdint.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/transpose_avx2.h"

#ifndef NK_AVX2_MR
#    define NK_AVX2_MR 6
#    define NK_AVX2_NV 2
#endif
#define MR NK_AVX2_MR
#define NV NK_AVX2_NV // ymm vectors per row
#define NR (8 * NV)
_Static_assert(MR <= 8, "pack_a transposes 8 rows at a time");
#define MC 480
#define KC 256
#define NC 3072
_Static_assert(MC <= NK_GEMM_MAX_MC && KC <= NK_GEMM_MAX_KC && NC <= NK_GEMM_MAX_NC && MC % MR == 0,
               "AVX2 blocks must fit the workspace nk_sgemm_ws_floats reserves");
// ukr_rows_pf prefetches each A row this many floats (one line) ahead, as the AVX-512 kernel.
#ifndef NK_ROWS_PF
#    define NK_ROWS_PF 16
#endif
// Lane mask for a masked load/store of the first `left` floats of an 8-float vector.
static inline __m256i lane_mask(int left)
{
    if (left > 8) left = 8;
    if (left < 0) left = 0;
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), idx);
}

static inline __attribute__((always_inline)) __m256 load_n(const float *p, __m256i k, int full)
{
    return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, k);
}

static inline __attribute__((always_inline)) void store_n(float *p, __m256i k, int full, __m256 v)
{
    if (full)
        _mm256_storeu_ps(p, v);
    else
        _mm256_maskstore_ps(p, k, v);
}

// One 8-column vector of the fused epilogue, in nk_tile_epi_fn's order: + bias (vb), then
// * scale + shift (vs, vh), then + the residual at res (NULL: none), then ReLU (MAXPS returns its
// second operand when the first is NaN: NaN -> 0, as the refs).
static inline __attribute__((always_inline)) __m256 epi_vec(__m256 v, __m256i k, int full,
                                                            const float *bias, __m256 vb,
                                                            const float *sc, __m256 vs, __m256 vh,
                                                            const float *res, int relu)
{
    if (bias) v = _mm256_add_ps(v, vb);
    if (sc) v = _mm256_fmadd_ps(v, vs, vh);
    if (res) v = _mm256_add_ps(v, load_n(res, k, full));
    if (relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
    return v;
}

// ---- micro-kernels ----

// acc = 0.
static inline __attribute__((always_inline)) void zero_tile(__m256 acc[MR][NV])
{
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            acc[i][v] = _mm256_setzero_ps();
    }
}

// Stores a finished tile, rows past m skipped and columns past n masked off: acc + beta * C, then
// the epilogue e (NULL: none). full: n == NR (a constant where the caller knows it, so that no
// lane masks are built). Every micro-kernel ends here. A whole tile without beta or epilogue
// (training's forward, the input gradients) is stored plainly: with K = 64 (conv2's 1x1s) the
// general path's branches and masks cost a seventh of the call.
static inline __attribute__((always_inline)) void store_tile(__m256 acc[MR][NV], float *c,
                                                             int64_t ldc, float beta, int m, int n,
                                                             const nk_tile_epi *e, int full)
{
    if (full && m == MR && !e && beta == 0.0f) {
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                _mm256_storeu_ps(c + i * ldc + 8 * v, acc[i][v]);
        }
        return;
    }
    const __m256 vb = _mm256_set1_ps(beta), zero = _mm256_setzero_ps();
    const float *bias = e ? e->bias : NULL, *sc = e ? e->sc : NULL, *sh = e ? e->sh : NULL;
    const float *res = e ? e->res : NULL;
    const int relu   = e && e->relu;
    // Non-temporal stores: a whole-width tile whose rows all start on a cache line.
    const int nt_store = e && e->stream && full && ((uintptr_t)c & 63) == 0 && (ldc & 15) == 0;
    __m256i km[NV];
    __m256 eb[NV], es[NV], eh[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
        km[v] = lane_mask(n - 8 * v);
        eb[v] = bias ? _mm256_maskload_ps(bias + 8 * v, km[v]) : zero;
        es[v] = sc ? _mm256_maskload_ps(sc + 8 * v, km[v]) : zero;
        eh[v] = sc ? _mm256_maskload_ps(sh + 8 * v, km[v]) : zero;
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        if (i >= m) break;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            float *cp = c + i * ldc + 8 * v;
            __m256 r  = acc[i][v];
            if (beta != 0.0f) r = _mm256_fmadd_ps(vb, load_n(cp, km[v], full), r);
            r = epi_vec(r, km[v], full, bias, eb[v], sc, es[v], eh[v],
                        res ? res + i * ldc + 8 * v : NULL, relu);
            if (nt_store)
                _mm256_stream_ps(cp, r);
            else
                store_n(cp, km[v], full, r);
        }
    }
}

static void ukr_avx2(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, float alpha,
                     float beta, int m, int n)
{
    __m256 acc[MR][NV];
    zero_tile(acc);
    for (int i = 0; i < m; i++)
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);

#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; p++) {
        __m256 bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            bv[v] = _mm256_loadu_ps(b + 8 * v);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            __m256 av = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                acc[i][v] = _mm256_fmadd_ps(av, bv[v], acc[i][v]);
        }
        a += MR;
        b += NR;
    }

    const __m256 va = _mm256_set1_ps(alpha);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            acc[i][v] = _mm256_mul_ps(va, acc[i][v]);
    }
    store_tile(acc, c, ldc, beta, m, n, NULL, n == NR);
}

// Batch-reduce form over unpacked rows (see nk_gemm_ukr_rows_fn): the A broadcasts come straight
// from the activations, so a convolution needs no A packing at all; the epilogue is applied in
// registers, so C is written once.
static inline __attribute__((always_inline)) void
ukr_rows_body(int nseg, const int *seglen, const float *const *rows, const float *b, float *c,
              int64_t ldc, float beta, int m, int n, const nk_tile_epi *e, int pf)
{
    __m256 acc[MR][NV];
    zero_tile(acc);
    for (int s = 0; s < nseg; s++, rows += MR) {
        const int len = seglen[s];
        for (int p = 0; p < len; p++) {
            __m256 bv[NV];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                bv[v] = _mm256_loadu_ps(b + 8 * v);
            if (pf && (p & 15) == 0 && p + NK_ROWS_PF < len) {
#pragma GCC unroll 16
                for (int i = 0; i < MR; i++)
                    _mm_prefetch((const char *)(rows[i] + p + NK_ROWS_PF), _MM_HINT_T0);
            }
#pragma GCC unroll 16
            for (int i = 0; i < MR; i++) {
                __m256 av = _mm256_broadcast_ss(rows[i] + p);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++)
                    acc[i][v] = _mm256_fmadd_ps(av, bv[v], acc[i][v]);
            }
            b += NR;
        }
    }
    if (m == MR && n == NR) // whole tiles with constant sizes: no masks built
        store_tile(acc, c, ldc, beta, MR, NR, e, 1);
    else
        store_tile(acc, c, ldc, beta, m, n, e, 0);
}

static void ukr_rows_avx2(int nseg, const int *seglen, const float *const *rows, const float *b,
                          float *c, int64_t ldc, float beta, int m, int n, const nk_tile_epi *e)
{
    ukr_rows_body(nseg, seglen, rows, b, c, ldc, beta, m, n, e, 0);
}

static void ukr_rows_pf_avx2(int nseg, const int *seglen, const float *const *rows, const float *b,
                             float *c, int64_t ldc, float beta, int m, int n, const nk_tile_epi *e)
{
    ukr_rows_body(nseg, seglen, rows, b, c, ldc, beta, m, n, e, 1);
}

// The fused epilogue on one finished tile (still in L1) in 256-bit registers.
static void tile_epi_avx2(float *c, int64_t ldc, int m, int n, const float *bias, const float *sc,
                          const float *sh, const float *res, int relu)
{
    const __m256 zero = _mm256_setzero_ps();
    for (int j = 0; j < n; j += 8) {
        const int full  = n - j >= 8;
        const __m256i k = lane_mask(n - j);
        const __m256 vb = bias ? _mm256_maskload_ps(bias + j, k) : zero;
        const __m256 vs = sc ? _mm256_maskload_ps(sc + j, k) : zero;
        const __m256 vh = sc ? _mm256_maskload_ps(sh + j, k) : zero;
        for (int i = 0; i < m; i++) {
            float *cp = c + i * ldc + j;
            __m256 v  = epi_vec(load_n(cp, k, full), k, full, bias, vb, sc, vs, vh,
                               res ? res + i * ldc + j : NULL, relu);
            store_n(cp, k, full, v);
        }
    }
}

// ---- packing ----

// Panels of MR rows: each k step's MR floats are written as one 8-float store, the last 8 - MR
// lanes overwritten by the next step's store, or by the next panel (panels are packed in order);
// the block's last store reaches 8 - MR floats past it, into the workspace's alignment slack
// (WS_ALIGN_FLOATS). VMASKMOVPS stores are microcoded on AMD: the masked form packed conv2's
// 1x1 input gradients and the packed A^T B at about half the speed.
_Static_assert(8 - MR <= 16, "pack_a writes at most 8 - MR floats past a block");
static void pack_a_avx2(int ta, int mc, int kc, const float *A, int64_t lda, float *dst)
{
    for (int i0 = 0; i0 < mc; i0 += MR, dst += (int64_t)MR * kc) {
        int mr = mc - i0 < MR ? mc - i0 : MR;
        if (ta) {
            __m256i km       = lane_mask(mr);
            const float *src = A + i0;
            for (int p = 0; p < kc; p++)
                _mm256_storeu_ps(dst + p * MR, _mm256_maskload_ps(src + p * lda, km));
            continue;
        }
        // A stored [M,K]: transpose 8 k at a time (rows past mr read as zero; the k tail
        // through masked loads).
        const float *src = A + (int64_t)i0 * lda;
        for (int p = 0; p < kc; p += 8) {
            const int w      = kc - p < 8 ? kc - p : 8;
            const __m256i kw = lane_mask(w);
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = i < mr ? _mm256_maskload_ps(src + i * lda + p, kw) : _mm256_setzero_ps();
            // The next panel's rows: A often streams from DRAM here (large M, small N).
            for (int i = 0; i < MR; i++)
                _mm_prefetch((const char *)(src + (MR + i) * lda + p), _MM_HINT_T0);
            transpose8(r);
            for (int q = 0; q < w; q++)
                _mm256_storeu_ps(dst + (p + q) * MR, r[q]);
        }
    }
}

static void pack_b_avx2(int tb, int kc, int nc, const float *B, int64_t ldb, float *dst)
{
    for (int j0 = 0; j0 < nc; j0 += NR, dst += (int64_t)NR * kc) {
        int nr = nc - j0 < NR ? nc - j0 : NR;
        if (!tb) {
            const float *src = B + j0;
            if (nr == NR) {
                for (int p = 0; p < kc; p++)
                    for (int v = 0; v < NV; v++)
                        _mm256_storeu_ps(dst + p * NR + 8 * v,
                                         _mm256_loadu_ps(src + p * ldb + 8 * v));
                continue;
            }
            for (int p = 0; p < kc; p++)
                for (int v = 0; v < NV; v++)
                    _mm256_storeu_ps(
                        dst + p * NR + 8 * v,
                        _mm256_maskload_ps(src + p * ldb + 8 * v, lane_mask(nr - 8 * v)));
            continue;
        }
        const float *src = B + (int64_t)j0 * ldb;
        int p            = 0;
        for (; p + 8 <= kc; p += 8) {
            for (int v = 0; v < NV; v++) {
                __m256 r[8];
                for (int j = 0; j < 8; j++)
                    r[j] = 8 * v + j < nr ? _mm256_loadu_ps(src + (8 * v + j) * ldb + p)
                                          : _mm256_setzero_ps();
                transpose8(r);
                for (int q = 0; q < 8; q++)
                    _mm256_storeu_ps(dst + (p + q) * NR + 8 * v, r[q]);
            }
        }
        for (; p < kc; p++)
            for (int j = 0; j < NR; j++)
                dst[p * NR + j] = j < nr ? src[j * ldb + p] : 0.0f;
    }
}

// kc = 256 keeps a 256 x 16 B micro-panel (16 KiB) in the 32 KiB L1 while A panels stream from
// L2. mc = 480 as with AVX-512 (a 480 KiB packed A block: half of Zen 4's L2, nearly all of Zen
// 3's 512 KiB); on Zen 3 mc = 240 measured no different on the packed weight gradients (conv4's
// and conv5's 1x1s, 0.93-1.05x), and the implicit GEMM packs no A. Also tried there and left
// (builds alternating, batch 16): depth blocks of 256 rather than CONV_WIDE_KC's 512 for the deep
// 1x1s, inference 1.10x the time (1 of 6 rounds faster); ukr_rows_pf 32 or 64 floats ahead, or
// none, within the noise either way (0.96-1.08x); each row tile across all column panels before
// the next (its rows in L1), no better.
const nk_gemm_kernel nk_gemm_kernel_avx2 = {
    .mr          = MR,
    .nr          = NR,
    .mc          = MC,
    .kc          = KC,
    .nc          = NC,
    .ukr         = ukr_avx2,
    .pack_a      = pack_a_avx2,
    .pack_b      = pack_b_avx2,
    .ukr_rows    = ukr_rows_avx2,
    .ukr_rows_pf = ukr_rows_pf_avx2,
    // No unpacked A^T B kernel: nk_sgemm_atb_cpu packs. Zen 3, once pack_a stored plainly
    // (VMASKMOVPS stores are microcoded on AMD): `sh bench/ab.sh -r 5`, the all-layer training
    // step 0.95x (5 of 5 rounds); bench conv --pass bwd-filter, conv3's 1x1s 0.65-0.70x, conv2's
    // 0.80-0.85x, the unpacked kernel's strided rows of A and B missing L1 every k step.
    // Splitting the 1x1s' rows over the threads as the wider filters do, a wash (1.004x).
    .ukr_atb = NULL,
    .epi     = tile_epi_avx2,
    // Zen 3 (AVX2 only), `sh bench/ab.sh -r 6`, batch 16: every epilogue convolution's output
    // streamed, the inference step 0.85x (faster in 6 of 6 rounds); bench conv, best of 5
    // alternating: conv2's expand 0.90x, conv3's 0.70x, conv2's 64 -> 64 0.81x, conv4's expand
    // 0.93x. Training's forward (a bias alone: batch normalisation reads the output next) is
    // not streamed: it was, through its bias, until 2026-11-29; stopping that, the all-layer
    // training step 0.95x (4 of 5 rounds), fine-tuning 0.93x (4 of 4), inference 0.98x (a wash:
    // only the projection shortcuts' outputs). With AVX-512 on Zen 4 streaming all the
    // expanding 1x1s was a wash, hence per table.
    .stream_all = 1,
};

// ---- peak ----

double nk_fma_loop_avx2(int64_t iters)
{
    // 10 independent chains cover FMA latency (4 cycles) x 2 pipes. Named variables, not an
    // array: with an array GCC keeps the chains in memory around the asm.
    const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
    __m256 x0 = _mm256_set1_ps(0.0f), x1 = _mm256_set1_ps(1.0f), x2 = _mm256_set1_ps(2.0f);
    __m256 x3 = _mm256_set1_ps(3.0f), x4 = _mm256_set1_ps(4.0f), x5 = _mm256_set1_ps(5.0f);
    __m256 x6 = _mm256_set1_ps(6.0f), x7 = _mm256_set1_ps(7.0f), x8 = _mm256_set1_ps(8.0f);
    __m256 x9 = _mm256_set1_ps(9.0f);
    for (int64_t it = 0; it < iters; it++) {
        x0 = _mm256_fmadd_ps(x0, m, a);
        x1 = _mm256_fmadd_ps(x1, m, a);
        x2 = _mm256_fmadd_ps(x2, m, a);
        x3 = _mm256_fmadd_ps(x3, m, a);
        x4 = _mm256_fmadd_ps(x4, m, a);
        x5 = _mm256_fmadd_ps(x5, m, a);
        x6 = _mm256_fmadd_ps(x6, m, a);
        x7 = _mm256_fmadd_ps(x7, m, a);
        x8 = _mm256_fmadd_ps(x8, m, a);
        x9 = _mm256_fmadd_ps(x9, m, a);
        // Keep the compiler from folding the loop; no code is emitted.
        __asm__ volatile("" : "+x"(x0), "+x"(x1), "+x"(x2), "+x"(x3), "+x"(x4));
        __asm__ volatile("" : "+x"(x5), "+x"(x6), "+x"(x7), "+x"(x8), "+x"(x9));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3)),
                             _mm256_add_ps(_mm256_add_ps(x4, x5), _mm256_add_ps(x6, x7)));
    s        = _mm256_add_ps(s, _mm256_add_ps(x8, x9));
    float sink[8];
    _mm256_storeu_ps(sink, s);
    volatile float keep = sink[0];
    (void)keep;
    return (double)iters * 10 * 8 * 2;
}
