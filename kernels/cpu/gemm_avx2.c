/*
 * gemm_avx2.c: the AVX2+FMA SGEMM micro-kernel (6 x 16 fp32: 12 ymm accumulators, broadcast A,
 * vector B) and its packers, plus the 256-bit FMA peak loop. Compiled with -mavx2 -mfma; only
 * reached through nk_gemm_kernel_avx2 after run-time detection (cpu.c). Driver: gemm.c; tests in
 * tests/test_gemm.c.
 */
#include <immintrin.h>

#include "kernels/cpu/cpu_internal.h"

#define MR 6
#define NR 16

// Lane mask for a masked load/store of the first `left` floats of an 8-float vector.
static inline __m256i lane_mask(int left)
{
    if (left > 8) left = 8;
    if (left < 0) left = 0;
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), idx);
}

// ---- micro-kernel ----

static void ukr_avx2(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, float alpha,
                     float beta, int m, int n)
{
    __m256 acc[MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int i = 0; i < m; i++)
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);

#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; p++) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            __m256 av = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
        }
        a += MR;
        b += NR;
    }

    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (m == MR && n == NR) {
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
#pragma GCC unroll 2
            for (int v = 0; v < 2; v++) {
                float *cp = c + i * ldc + 8 * v;
                __m256 r  = _mm256_mul_ps(va, acc[i][v]);
                if (beta != 0.0f) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cp), r);
                _mm256_storeu_ps(cp, r);
            }
        }
        return;
    }
    __m256i k0 = lane_mask(n), k1 = lane_mask(n - 8);
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        if (i >= m) break;
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++) {
            __m256i k = v ? k1 : k0;
            float *cp = c + i * ldc + 8 * v;
            __m256 r  = _mm256_mul_ps(va, acc[i][v]);
            if (beta != 0.0f) r = _mm256_fmadd_ps(vb, _mm256_maskload_ps(cp, k), r);
            _mm256_maskstore_ps(cp, k, r);
        }
    }
}

// ---- packing ----

// In-register transpose of an 8x8 block: r[i] holds row i on entry, column i on exit.
static inline __attribute__((always_inline)) void transpose8(__m256 r[8])
{
    __m256 t[8], s[8];
    for (int i = 0; i < 8; i += 2) {
        t[i]     = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    // Within each 128-bit lane, s[4g + i] holds rows 4g..4g+3 of column (lane*4 + {0,2,1,3}[i]).
    for (int g = 0; g < 8; g += 4) {
        for (int j = 0; j < 2; j++) {
            __m256d x = _mm256_castps_pd(t[g + j]), y = _mm256_castps_pd(t[g + 2 + j]);
            s[g + j]     = _mm256_castpd_ps(_mm256_unpacklo_pd(x, y));
            s[g + 2 + j] = _mm256_castpd_ps(_mm256_unpackhi_pd(x, y));
        }
    }
    static const int perm[4] = {0, 2, 1, 3};
    for (int i = 0; i < 4; i++) {
        // Low lanes give columns 0..3, high lanes columns 4..7.
        r[perm[i]]     = _mm256_permute2f128_ps(s[i], s[4 + i], 0x20);
        r[4 + perm[i]] = _mm256_permute2f128_ps(s[i], s[4 + i], 0x31);
    }
}

static void pack_a_avx2(int ta, int mc, int kc, const float *A, int64_t lda, float *dst)
{
    const __m256i store6 = lane_mask(MR);
    for (int i0 = 0; i0 < mc; i0 += MR, dst += (int64_t)MR * kc) {
        int mr = mc - i0 < MR ? mc - i0 : MR;
        if (ta) {
            __m256i km       = lane_mask(mr);
            const float *src = A + i0;
            for (int p = 0; p < kc; p++)
                _mm256_maskstore_ps(dst + p * MR, store6, _mm256_maskload_ps(src + p * lda, km));
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
                _mm256_maskstore_ps(dst + (p + q) * MR, store6, r[q]);
        }
    }
}

static void pack_b_avx2(int tb, int kc, int nc, const float *B, int64_t ldb, float *dst)
{
    for (int j0 = 0; j0 < nc; j0 += NR, dst += (int64_t)NR * kc) {
        int nr = nc - j0 < NR ? nc - j0 : NR;
        if (!tb) {
            const float *src = B + j0;
            __m256i k0 = lane_mask(nr), k1 = lane_mask(nr - 8);
            for (int p = 0; p < kc; p++) {
                _mm256_storeu_ps(dst + p * NR, _mm256_maskload_ps(src + p * ldb, k0));
                _mm256_storeu_ps(dst + p * NR + 8, _mm256_maskload_ps(src + p * ldb + 8, k1));
            }
            continue;
        }
        const float *src = B + (int64_t)j0 * ldb;
        int p            = 0;
        for (; p + 8 <= kc; p += 8) {
            for (int v = 0; v < 2; v++) {
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

// kc = 256 keeps a 256 x 16 B micro-panel (16 KiB) in L1 while 6 x 256 A panels stream from L2;
// mc = 264 keeps the packed A block (264 KiB) well inside L2.
const nk_gemm_kernel nk_gemm_kernel_avx2 = {
    .mr     = MR,
    .nr     = NR,
    .mc     = 264,
    .kc     = 256,
    .nc     = 3072,
    .ukr    = ukr_avx2,
    .pack_a = pack_a_avx2,
    .pack_b = pack_b_avx2,
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
