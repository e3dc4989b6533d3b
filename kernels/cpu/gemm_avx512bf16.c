/*
 * gemm_avx512bf16.c: the AVX512_BF16 micro-kernel of the bf16 inference GEMM (12 x 32 float32
 * accumulators, VDPBF16PS on k pairs: broadcast one A pair, two B vectors of 16 column pairs) and
 * its A packer (VCVTNE2PS2BF16 rounding, then a 16x16 word transpose), plus the VDPBF16PS peak
 * loop; the row kernel on unpacked bf16 activations, which can finish a bf16 output tile in
 * registers (ukr_rows_fin). Compiled with -mavx512bf16; reached only through
 * nk_bf16_kernel_avx512 after run-time detection (cpu.c). The driver is in gemm.c; tests in
 * tests/test_gemm.c against nk_gemm_bf16_ref and in tests/test_ops.c (bf16 convolutions).
 */
#include <immintrin.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/epi_avx512.h"
#include "kernels/cpu/transpose_avx512.h"

#define MR NK_BF16_MR
#define NR NK_BF16_NR
#define NV (NR / 16)

static inline __m512bh as_bh(__m512i v)
{
    return (__m512bh)v;
}

static void ukr_bf16_avx512(int64_t kp, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                            float beta, int m, int n)
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

#pragma GCC unroll 2
    for (int64_t p = 0; p < kp; p++) {
        __m512bh bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            bv[v] = as_bh(_mm512_loadu_si512((const void *)(b + 16 * v)));
        _mm_prefetch((const char *)(b + 8 * NR), _MM_HINT_T0);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            __m512bh av = as_bh(_mm512_set1_epi32((int)a[i]));
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                acc[i][v] = _mm512_dpbf16_ps(acc[i][v], av, bv[v]);
        }
        a += MR;
        b += NR;
    }

    __m512 vb = _mm512_set1_ps(beta);
    if (m == MR && n == NR) {
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) {
                float *cp = c + i * ldc + 16 * v;
                __m512 r  = acc[i][v];
                if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cp), r);
                _mm512_storeu_ps(cp, r);
            }
        }
        return;
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        if (i >= m) break;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            __mmask16 k = col_mask(n, v);
            float *cp   = c + i * ldc + 16 * v;
            __m512 r    = acc[i][v];
            if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k, cp), r);
            _mm512_mask_storeu_ps(cp, k, r);
        }
    }
}

static void pack_bf16_avx512(const float *const *src, int w, uint32_t *dst)
{
    const __mmask16 m0 = (__mmask16)(w >= 16 ? 0xFFFFu : (1u << w) - 1u);
    const __mmask16 m1 = (__mmask16)(w >= 32 ? 0xFFFFu : w > 16 ? (1u << (w - 16)) - 1u : 0u);
    __m512 r[16];
    for (int i = 0; i < 16; i++) {
        if (i < MR && src[i]) {
            __m512 lo = _mm512_maskz_loadu_ps(m0, src[i]);
            __m512 hi = _mm512_maskz_loadu_ps(m1, src[i] + 16);
            // Elements 0..15 from lo, 16..31 from hi: lane j is the pair (2j, 2j+1).
            r[i] = _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        } else {
            r[i] = _mm512_setzero_ps();
        }
    }
    transpose16(r);
    const int pairs = (w + 1) / 2;
    for (int q = 0; q < pairs; q++)
        _mm512_mask_storeu_ps((float *)(dst + q * MR), (__mmask16)((1u << MR) - 1u), r[q]);
}

static void pack_t_bf16_avx512(const float *src, int64_t lda, int m, int kc, uint32_t *dst)
{
    // Row pair (2q, 2q+1) of src, m <= MR columns: both rounded, then word i = lo | hi << 16.
    const __mmask16 km = (__mmask16)((1u << m) - 1u), ks = (__mmask16)((1u << MR) - 1u);
    for (int q = 0; q < kc / 2; q++) {
        const float *r0 = src + (int64_t)(2 * q) * lda;
        __m512i lo =
            _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(km, r0)));
        __m512i hi =
            _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(km, r0 + lda)));
        _mm512_mask_storeu_epi32(dst + q * MR, ks, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
    if (kc % 2) {
        const int q = kc / 2;
        __m512i lo  = _mm512_cvtepu16_epi32(
             (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(km, src + (int64_t)(2 * q) * lda)));
        _mm512_mask_storeu_epi32(dst + q * MR, ks, lo);
    }
}

static void pack_b_bf16_avx512(const float *B, int64_t ldb, int K, int n, uint32_t *dst,
                               float *colsum)
{
    const __mmask16 k0 = (__mmask16)(n >= 16 ? 0xFFFFu : (1u << n) - 1u);
    const __mmask16 k1 = (__mmask16)(n >= 32 ? 0xFFFFu : n > 16 ? (1u << (n - 16)) - 1u : 0u);
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    for (int q = 0; q < (K + 1) / 2; q++) {
        const float *r0 = B + (int64_t)(2 * q) * ldb, *r1 = r0 + ldb;
        const int two = 2 * q + 1 < K;
        for (int v = 0; v < 2; v++) {
            const __mmask16 km = v ? k1 : k0;
            const __m512 f0    = _mm512_maskz_loadu_ps(km, r0 + 16 * v);
            const __m512 f1    = two ? _mm512_maskz_loadu_ps(km, r1 + 16 * v) : _mm512_setzero_ps();
            if (colsum) { // rows in order: 2q, then 2q + 1
                __m512 *s = v ? &s1 : &s0;
                *s        = _mm512_add_ps(_mm512_add_ps(*s, f0), f1);
            }
            __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(f0));
            __m512i hi = two ? _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(f1))
                             : _mm512_setzero_si512();
            _mm512_storeu_si512(dst + q * NR + 16 * v,
                                _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        }
    }
    if (colsum) {
        _mm512_mask_storeu_ps(colsum, k0, s0);
        _mm512_mask_storeu_ps(colsum + 16, k1, s1);
    }
}

// With pf, ukr_rows prefetches each A row one line (16 pair words) ahead, once per line: the
// first column panel reads the rows from memory (12 short streams that the hardware's prefetch
// does not follow); later panels find them in L2, where prefetching only costs. gemm.c passes pf
// for large A only (nk_bf16_rows_pf_min_bytes, with the measurements).
#define ROWS_PF 16

static inline __attribute__((always_inline)) void
ukr_rows_body(int nseg, const int *segp, const uint32_t *const *rows, const uint32_t *b, float *c,
              int64_t ldc, float beta, int m, int n, const int pf, const nk_bf16_fin_args *f)
{
    __m512 acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            acc[i][v] = _mm512_setzero_ps();
    }
    for (int s = 0; s < nseg; s++, rows += MR) {
        const int len = segp[s];
        for (int p = 0; p < len; p++) {
            __m512bh bv[NV];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                bv[v] = as_bh(_mm512_loadu_si512((const void *)(b + 16 * v)));
            if (pf && (p & 15) == 0 && p + ROWS_PF < len) {
#pragma GCC unroll 16
                for (int i = 0; i < MR; i++)
                    _mm_prefetch((const char *)(rows[i] + p + ROWS_PF), _MM_HINT_T0);
            }
#pragma GCC unroll 16
            for (int i = 0; i < MR; i++) {
                __m512bh av = as_bh(_mm512_set1_epi32((int)rows[i][p]));
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++)
                    acc[i][v] = _mm512_dpbf16_ps(acc[i][v], av, bv[v]);
            }
            b += NR;
        }
    }
    // The finish's arguments as locals (the bf16 stores below may alias *f).
    const nk_bf16_fin_args fa = f ? *f : (nk_bf16_fin_args){0};
    const __m512 vbeta = _mm512_set1_ps(beta), zero = _mm512_setzero_ps();
    __mmask16 km[NV];
    __m512 eb[NV], es[NV], eh[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
        km[v] = col_mask(n, v);
        eb[v] = fa.bias ? _mm512_maskz_loadu_ps(km[v], fa.bias + 16 * v) : zero;
        es[v] = fa.sc ? _mm512_maskz_loadu_ps(km[v], fa.sc + 16 * v) : zero;
        eh[v] = fa.sc ? _mm512_maskz_loadu_ps(km[v], fa.sh + 16 * v) : zero;
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        if (i >= m) break;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            float *cp = c + i * ldc + 16 * v;
            __m512 r  = acc[i][v];
            if (beta != 0.0f) r = _mm512_fmadd_ps(vbeta, _mm512_maskz_loadu_ps(km[v], cp), r);
            if (!f) {
                _mm512_mask_storeu_ps(cp, km[v], r);
                continue;
            }
            r = epi_vec(r, km[v], fa.bias, eb[v], fa.sc, es[v], eh[v], NULL,
                        fa.resb ? fa.resb + i * fa.ldr + 16 * v : NULL, fa.relu);
            _mm256_mask_storeu_epi16(fa.yb + i * fa.ldy + 16 * v, km[v],
                                     (__m256i)_mm512_cvtneps_pbh(r));
        }
    }
}

static void ukr_rows_bf16_avx512(int nseg, const int *segp, const uint32_t *const *rows,
                                 const uint32_t *b, float *c, int64_t ldc, float beta, int m, int n,
                                 int pf)
{
    if (pf)
        ukr_rows_body(nseg, segp, rows, b, c, ldc, beta, m, n, 1, NULL);
    else
        ukr_rows_body(nseg, segp, rows, b, c, ldc, beta, m, n, 0, NULL);
}

static void ukr_rows_fin_bf16_avx512(int nseg, const int *segp, const uint32_t *const *rows,
                                     const uint32_t *b, const float *c, int64_t ldc, float beta,
                                     int m, int n, int pf, const nk_bf16_fin_args *f)
{
    if (pf)
        ukr_rows_body(nseg, segp, rows, b, (float *)c, ldc, beta, m, n, 1, f);
    else
        ukr_rows_body(nseg, segp, rows, b, (float *)c, ldc, beta, m, n, 0, f);
}

void nk_bf16_convert_avx512(int64_t n, const float *x, uint16_t *y)
{
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
        _mm512_storeu_si512((void *)(y + i), (__m512i)v);
    }
    for (; i < n; i++)
        y[i] = nk_f32_to_bf16(x[i]);
}

void nk_bf16_fin_avx512(float *c, int64_t ldc, int m, int n, const float *bias, const float *sc,
                        const float *sh, const uint16_t *resb, int64_t ldr, int relu, uint16_t *yb,
                        int64_t ldy)
{
    const __m512 zero = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        const __mmask16 k = col_mask(n - j, 0);
        const __m512 vb   = bias ? _mm512_maskz_loadu_ps(k, bias + j) : zero;
        const __m512 vs   = sc ? _mm512_maskz_loadu_ps(k, sc + j) : zero;
        const __m512 vh   = sc ? _mm512_maskz_loadu_ps(k, sh + j) : zero;
        for (int i = 0; i < m; i++) {
            float *cp = c + i * ldc + j;
            __m512 v  = epi_vec(_mm512_maskz_loadu_ps(k, cp), k, bias, vb, sc, vs, vh, NULL,
                               resb ? resb + i * ldr + j : NULL, relu);
            if (yb)
                _mm256_mask_storeu_epi16(yb + i * ldy + j, k, (__m256i)_mm512_cvtneps_pbh(v));
            else
                _mm512_mask_storeu_ps(cp, k, v);
        }
    }
}

const nk_bf16_kernel nk_bf16_kernel_avx512 = {
    .mr           = MR,
    .ukr          = ukr_bf16_avx512,
    .pack         = pack_bf16_avx512,
    .pack_t       = pack_t_bf16_avx512,
    .pack_b       = pack_b_bf16_avx512,
    .ukr_rows     = ukr_rows_bf16_avx512,
    .ukr_rows_fin = ukr_rows_fin_bf16_avx512,
    .convert      = nk_bf16_convert_avx512,
    .fin          = nk_bf16_fin_avx512,
};

// ---- peak ----

double nk_bf16_loop_avx512(int64_t iters)
{
    // 12 independent accumulators cover VDPBF16PS latency; named variables as in the FMA loop.
    const __m512bh a = as_bh(_mm512_set1_epi32(0x3f803f80)),
                   b = as_bh(_mm512_set1_epi32(0x33d633d6));
    __m512 x0 = _mm512_set1_ps(0.0f), x1 = _mm512_set1_ps(1.0f), x2 = _mm512_set1_ps(2.0f);
    __m512 x3 = _mm512_set1_ps(3.0f), x4 = _mm512_set1_ps(4.0f), x5 = _mm512_set1_ps(5.0f);
    __m512 x6 = _mm512_set1_ps(6.0f), x7 = _mm512_set1_ps(7.0f), x8 = _mm512_set1_ps(8.0f);
    __m512 x9 = _mm512_set1_ps(9.0f), x10 = _mm512_set1_ps(10.0f), x11 = _mm512_set1_ps(11.0f);
    for (int64_t it = 0; it < iters; it++) {
        x0  = _mm512_dpbf16_ps(x0, a, b);
        x1  = _mm512_dpbf16_ps(x1, a, b);
        x2  = _mm512_dpbf16_ps(x2, a, b);
        x3  = _mm512_dpbf16_ps(x3, a, b);
        x4  = _mm512_dpbf16_ps(x4, a, b);
        x5  = _mm512_dpbf16_ps(x5, a, b);
        x6  = _mm512_dpbf16_ps(x6, a, b);
        x7  = _mm512_dpbf16_ps(x7, a, b);
        x8  = _mm512_dpbf16_ps(x8, a, b);
        x9  = _mm512_dpbf16_ps(x9, a, b);
        x10 = _mm512_dpbf16_ps(x10, a, b);
        x11 = _mm512_dpbf16_ps(x11, a, b);
        __asm__ volatile("" : "+v"(x0), "+v"(x1), "+v"(x2), "+v"(x3), "+v"(x4), "+v"(x5));
        __asm__ volatile("" : "+v"(x6), "+v"(x7), "+v"(x8), "+v"(x9), "+v"(x10), "+v"(x11));
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x0, x1), _mm512_add_ps(x2, x3)),
                             _mm512_add_ps(_mm512_add_ps(x4, x5), _mm512_add_ps(x6, x7)));
    s        = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(x8, x9), _mm512_add_ps(x10, x11)));
    volatile float keep = _mm512_reduce_add_ps(s);
    (void)keep;
    return (double)iters * 12 * 32 * 2;
}
