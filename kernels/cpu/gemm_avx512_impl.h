/*
 * gemm_avx512_impl.h: the AVX-512 SGEMM micro-kernels (MR x NR fp32 register block, broadcast A,
 * vector B) and their packers, written once and compiled twice (the Makefile gives *_avx512.c
 * its AVX-512 flags): by gemm_avx512.c as nk_gemm_kernel_avx512 (6 x 64, every convolution path
 * and Winograd) and by gemm_packed_avx512.c as nk_gemm_kernel_avx512_12x32 (the fully packed
 * GEMM). The includer defines NK_AVX512_MR, NK_AVX512_NV and NK_AVX512_TABLE. Only reached after
 * run-time detection (cpu.c). The driver that blocks and threads around them is gemm.c; tests in
 * tests/test_gemm.c.
 */
#include <immintrin.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/epi_avx512.h"
#include "kernels/cpu/transpose_avx512.h"

#ifndef NK_AVX512_MC
#    define NK_AVX512_MC 480
#    define NK_AVX512_KC 256
#    define NK_AVX512_NC 3072
#endif
_Static_assert(NK_AVX512_MC <= NK_GEMM_MAX_MC && NK_AVX512_KC <= NK_GEMM_MAX_KC &&
                   NK_AVX512_NC <= NK_GEMM_MAX_NC && NK_AVX512_MC % NK_AVX512_MR == 0,
               "AVX-512 blocks must fit the workspace nk_sgemm_ws_floats reserves");
#define MR NK_AVX512_MR
// ukr_rows_pf prefetches each A row this many floats (one line) ahead, once per line, for A
// read in place from activations beyond L2: conv2_1x1_reduce (batch 16) 11.0 -> 9.9 ms, medians
// of 6 alternating runs (at 32 floats; 16 and 64 were no better then, on 4 KiB pages). On huge
// pages (b980fd5) 16 is better: 1x1 forwards at batch 16, best of 25, builds with 16 / 32 / 64
// alternating: conv2's expand 9.45 / 10.24 / 9.45 ms, its reduce 9.11 / 9.38 / 9.67, conv3's
// expand 8.59 / 9.29 / 9.10, its reduce 8.59 / 8.78 / 8.88, conv4's and conv5's within +-2 %.
#ifndef NK_ROWS_PF
#    define NK_ROWS_PF 16
#endif
#define NV NK_AVX512_NV // zmm vectors per row
#define NR (16 * NV)

// ---- micro-kernel ----

static void ukr_avx512(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                       float alpha, float beta, int m, int n)
{
    __m512 acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            acc[i][v] = _mm512_setzero_ps();
    }
    for (int i = 0; i < m; i++)
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);

#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; p++) {
        __m512 bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            __m512 av = _mm512_set1_ps(a[i]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
        }
        a += MR;
        b += NR;
    }

    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    if (m == MR && n == NR) {
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) {
                float *cp = c + i * ldc + 16 * v;
                __m512 r  = _mm512_mul_ps(va, acc[i][v]);
                if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cp), r);
                _mm512_storeu_ps(cp, r);
            }
        }
        return;
    }
    // Edge tile: rows past m are skipped, columns past n masked off.
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        if (i >= m) break;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            __mmask16 k = col_mask(n, v);
            float *cp   = c + i * ldc + 16 * v;
            __m512 r    = _mm512_mul_ps(va, acc[i][v]);
            if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k, cp), r);
            _mm512_mask_storeu_ps(cp, k, r);
        }
    }
}

// ukr_atb prefetches the rows of A and of B (activations and output gradients, [rows, channels])
// this many rows ahead when they are at least nk_atb_pf_min_ld floats long: a micro-kernel reads
// only MR or NR floats of each row, so with rows of 512 bytes and more a 4 KiB page holds at most
// 8 of its k steps and the hardware's prefetch, which follows a stream within a page, falls
// behind. Measured on the 1x1 weight gradients at batch 16, 2 threads, the forms alternating call
// by call in one process (medians of 20, ms). B alone: conv3's expand (B rows of 2 KiB) 10.64 ->
// 8.96, conv3's reduce (512 B) 11.51 -> 10.08, conv2's expand (1 KiB) 11.54 -> 11.27; conv2's
// reduce (256 B rows) got slower. A too: conv2's reduce (A rows of 1 KiB) 10.60 -> 8.79, conv3's
// expand 9.90 -> 9.01, conv3's reduce 10.41 -> 8.99; conv4's and conv5's (the packed path)
// unchanged. Rows of 256 bytes too, since the buffers are huge pages (b980fd5), best of 15
// alternating: conv2's expand (A rows of 256 B) 9.8-11.3 -> 9.0-9.9, its reduce (B rows of
// 256 B) 9.8-10.5 -> 9.2-10.1, conv2's 64 x 64 3.1 -> 2.7-2.8.
#define ATB_PF_ROWS 32

// C[0:m,0:n] = A^T B + beta * C over kc rows of unpacked A (a[p*lda + i]) and B (b[p*ldb + j]),
// as in a weight gradient: A and B are activations and output gradients, both [rows, channels],
// so row p of either is one k step and nothing is packed. Rows past m of A are never read (the
// edge form clamps the broadcast index), columns past n of B are masked off.
static inline __attribute__((always_inline)) void
ukr_atb_body(int64_t kc, const float *a, int64_t lda, const float *b, int64_t ldb, float *c,
             int64_t ldc, float beta, int m, int n, int edge, int pf)
{
    __m512 acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            acc[i][v] = _mm512_setzero_ps();
    }
    __mmask16 km[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
        km[v] = col_mask(n, v);
    int ix[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
        ix[i] = edge && i >= m ? m - 1 : i;
    for (int64_t p = 0; p < kc; p++) {
        __m512 bv[NV];
        if (pf & 1)
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                _mm_prefetch((const char *)(b + ATB_PF_ROWS * ldb + 16 * v), _MM_HINT_T0);
        if (pf & 2) {
            _mm_prefetch((const char *)(a + ATB_PF_ROWS * lda), _MM_HINT_T0);
            _mm_prefetch((const char *)(a + ATB_PF_ROWS * lda + MR - 1), _MM_HINT_T0);
        }
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            bv[v] = edge ? _mm512_maskz_loadu_ps(km[v], b + 16 * v) : _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            __m512 av = _mm512_set1_ps(a[edge ? ix[i] : i]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
        }
        a += lda;
        b += ldb;
    }
    __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        if (i >= m) break;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            float *cp = c + i * ldc + 16 * v;
            __m512 r  = acc[i][v];
            if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(km[v], cp), r);
            _mm512_mask_storeu_ps(cp, km[v], r);
        }
    }
}

static void ukr_atb_avx512(int64_t kc, const float *a, int64_t lda, const float *b, int64_t ldb,
                           float *c, int64_t ldc, float beta, int m, int n)
{
    const int pf = (ldb >= nk_atb_pf_min_ld) | (lda >= nk_atb_pf_min_ld) << 1; // B, A
    if (m == MR && n == NR) {
        switch (pf) {
        case 0:
            ukr_atb_body(kc, a, lda, b, ldb, c, ldc, beta, MR, NR, 0, 0);
            break;
        case 1:
            ukr_atb_body(kc, a, lda, b, ldb, c, ldc, beta, MR, NR, 0, 1);
            break;
        case 2:
            ukr_atb_body(kc, a, lda, b, ldb, c, ldc, beta, MR, NR, 0, 2);
            break;
        default:
            ukr_atb_body(kc, a, lda, b, ldb, c, ldc, beta, MR, NR, 0, 3);
            break;
        }
    } else {
        ukr_atb_body(kc, a, lda, b, ldb, c, ldc, beta, m, n, 1, pf);
    }
}

// Batch-reduce form over unpacked rows (see nk_gemm_ukr_rows_fn): the A broadcasts come straight
// from the activations, so a convolution needs no A packing at all.
static inline __attribute__((always_inline)) void
ukr_rows_body(int nseg, const int *seglen, const float *const *rows, const float *b, float *c,
              int64_t ldc, float beta, int m, int n, const nk_tile_epi *e, int pf)
{
    __m512 acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            acc[i][v] = _mm512_setzero_ps();
    }
    for (int s = 0; s < nseg; s++, rows += MR) {
        const int len = seglen[s];
        for (int p = 0; p < len; p++) {
            __m512 bv[NV];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                bv[v] = _mm512_loadu_ps(b + 16 * v);
            if (pf && (p & 15) == 0 && p + NK_ROWS_PF < len) {
#pragma GCC unroll 16
                for (int i = 0; i < MR; i++)
                    _mm_prefetch((const char *)(rows[i] + p + NK_ROWS_PF), _MM_HINT_T0);
            }
#pragma GCC unroll 16
            for (int i = 0; i < MR; i++) {
                __m512 av = _mm512_set1_ps(rows[i][p]);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++)
                    acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
            }
            b += NR;
        }
    }
    const __m512 vb = _mm512_set1_ps(beta), zero = _mm512_setzero_ps();
    // The epilogue in registers: C is written once (on the large early layers a separate pass
    // over the stored tile, waiting on its fresh lines, took a fifth of the convolution).
    const float *bias = e ? e->bias : NULL, *sc = e ? e->sc : NULL, *sh = e ? e->sh : NULL;
    const float *res = e ? e->res : NULL;
    const int relu   = e && e->relu;
    // Non-temporal stores: a whole-width tile whose rows all start on a cache line.
    const int nt_store = e && e->stream && n == NR && ((uintptr_t)c & 63) == 0 && (ldc & 15) == 0;
    __mmask16 km[NV];
    __m512 eb[NV], es[NV], eh[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
        km[v] = col_mask(n, v);
        eb[v] = bias ? _mm512_maskz_loadu_ps(km[v], bias + 16 * v) : zero;
        es[v] = sc ? _mm512_maskz_loadu_ps(km[v], sc + 16 * v) : zero;
        eh[v] = sc ? _mm512_maskz_loadu_ps(km[v], sh + 16 * v) : zero;
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        if (i >= m) break;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            float *cp = c + i * ldc + 16 * v;
            __m512 r  = acc[i][v];
            if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(km[v], cp), r);
            r = epi_vec(r, km[v], bias, eb[v], sc, es[v], eh[v],
                        res ? res + i * ldc + 16 * v : NULL, NULL, relu);
            if (nt_store) {
                _mm512_stream_ps(cp, r);
                continue;
            }
            _mm512_mask_storeu_ps(cp, km[v], r);
        }
    }
}

static void ukr_rows_avx512(int nseg, const int *seglen, const float *const *rows, const float *b,
                            float *c, int64_t ldc, float beta, int m, int n, const nk_tile_epi *e)
{
    ukr_rows_body(nseg, seglen, rows, b, c, ldc, beta, m, n, e, 0);
}

static void ukr_rows_pf_avx512(int nseg, const int *seglen, const float *const *rows,
                               const float *b, float *c, int64_t ldc, float beta, int m, int n,
                               const nk_tile_epi *e)
{
    ukr_rows_body(nseg, seglen, rows, b, c, ldc, beta, m, n, e, 1);
}

// The fused epilogue in 512-bit registers (masked at the right edge). Was plain C before: GCC's
// -O2 left those loops scalar, and on the large early layers they cost twice the GEMM itself.
static void tile_epi_avx512(float *c, int64_t ldc, int m, int n, const float *bias, const float *sc,
                            const float *sh, const float *res, int relu)
{
    const __m512 zero = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        const __mmask16 k = col_mask(n - j, 0);
        const __m512 vb   = bias ? _mm512_maskz_loadu_ps(k, bias + j) : zero;
        const __m512 vs   = sc ? _mm512_maskz_loadu_ps(k, sc + j) : zero;
        const __m512 vh   = sc ? _mm512_maskz_loadu_ps(k, sh + j) : zero;
        for (int i = 0; i < m; i++) {
            float *cp      = c + i * ldc + j;
            const __m512 v = epi_vec(_mm512_maskz_loadu_ps(k, cp), k, bias, vb, sc, vs, vh,
                                     res ? res + i * ldc + j : NULL, NULL, relu);
            _mm512_mask_storeu_ps(cp, k, v);
        }
    }
}

// ---- packing ----

static void pack_a_avx512(int ta, int mc, int kc, const float *A, int64_t lda, float *dst)
{
    for (int i0 = 0; i0 < mc; i0 += MR, dst += (int64_t)MR * kc) {
        int mr = mc - i0 < MR ? mc - i0 : MR;
        if (ta) {
            // A stored [K,M]: each k gives mr contiguous floats.
            __mmask16 km     = (__mmask16)((1u << mr) - 1u);
            const float *src = A + i0;
            for (int p = 0; p < kc; p++)
                _mm512_mask_storeu_ps(dst + p * MR, (__mmask16)((1u << MR) - 1u),
                                      _mm512_maskz_loadu_ps(km, src + p * lda));
            continue;
        }
        // A stored [M,K]: transpose 16 k at a time (rows past mr read as zero; the k tail
        // through masked loads).
        const float *src = A + (int64_t)i0 * lda;
        for (int p = 0; p < kc; p += 16) {
            const int w        = kc - p < 16 ? kc - p : 16;
            const __mmask16 kw = (__mmask16)((1u << w) - 1u);
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < mr ? _mm512_maskz_loadu_ps(kw, src + i * lda + p) : _mm512_setzero_ps();
            // The next panel's rows: A often streams from DRAM here (large M, small N).
            for (int i = 0; i < MR; i++)
                _mm_prefetch((const char *)(src + (MR + i) * lda + p), _MM_HINT_T0);
            transpose16(r);
            for (int q = 0; q < w; q++)
                _mm512_mask_storeu_ps(dst + (p + q) * MR, (__mmask16)((1u << MR) - 1u), r[q]);
        }
    }
}

static void pack_b_avx512(int tb, int kc, int nc, const float *B, int64_t ldb, float *dst)
{
    for (int j0 = 0; j0 < nc; j0 += NR, dst += (int64_t)NR * kc) {
        int nr = nc - j0 < NR ? nc - j0 : NR;
        if (!tb) {
            // B stored [K,N]: each k gives nr contiguous floats.
            const float *src = B + j0;
            if (nr == NR) {
                for (int p = 0; p < kc; p++)
                    for (int v = 0; v < NV; v++)
                        _mm512_storeu_ps(dst + p * NR + 16 * v,
                                         _mm512_loadu_ps(src + p * ldb + 16 * v));
            } else {
                for (int p = 0; p < kc; p++)
                    for (int v = 0; v < NV; v++)
                        _mm512_storeu_ps(
                            dst + p * NR + 16 * v,
                            _mm512_maskz_loadu_ps(col_mask(nr, v), src + p * ldb + 16 * v));
            }
            continue;
        }
        // B stored [N,K]: transpose 16 columns x 16 k at a time.
        const float *src = B + (int64_t)j0 * ldb;
        int p            = 0;
        for (; p + 16 <= kc; p += 16) {
            for (int v = 0; v < NV; v++) {
                __m512 r[16];
                for (int j = 0; j < 16; j++)
                    r[j] = 16 * v + j < nr ? _mm512_loadu_ps(src + (16 * v + j) * ldb + p)
                                           : _mm512_setzero_ps();
                transpose16(r);
                for (int q = 0; q < 16; q++)
                    _mm512_storeu_ps(dst + (p + q) * NR + 16 * v, r[q]);
            }
        }
        for (; p < kc; p++)
            for (int j = 0; j < NR; j++)
                dst[p * NR + j] = j < nr ? src[j * ldb + p] : 0.0f;
    }
}

// mc = 480 keeps the packed A block (480 x 256 x 4 B = 480 KiB) in half the 1 MiB L2. kc = 256
// measured best (192 and 384 were 1-6% slower with 12 x 32, 128 and 192 with 6 x 64).
const nk_gemm_kernel NK_AVX512_TABLE = {
    .mr          = MR,
    .nr          = NR,
    .mc          = NK_AVX512_MC,
    .kc          = NK_AVX512_KC,
    .nc          = NK_AVX512_NC,
    .ukr         = ukr_avx512,
    .pack_a      = pack_a_avx512,
    .pack_b      = pack_b_avx512,
    .ukr_rows    = ukr_rows_avx512,
    .ukr_rows_pf = ukr_rows_pf_avx512,
    .ukr_atb     = ukr_atb_avx512,
    .epi         = tile_epi_avx512,
};
