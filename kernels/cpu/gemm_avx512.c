/*
 * gemm_avx512.c: the AVX-512 SGEMM kernels of gemm_avx512_impl.h with the 6 x 64 register block
 * (nk_gemm_kernel_avx512: the convolutions, read in place, Winograd's products, the weight
 * gradients' A^T B), plus the 512-bit FMA peak loop. gemm_packed_avx512.c builds the same code
 * with 12 x 32 for the fully packed GEMM.
 */
#include <immintrin.h>

#include "kernels/cpu/cpu_internal.h"

// 6 x 64: 24 zmm accumulators, 4 for B, 1 broadcast. First chosen as 12 x 32, which on Zen 4
// matched 6 x 64 and 14 x 32 on large squares (~100 GFLOP/s per core, ~88% of the measured FMA
// peak) and then beat them on the N = 64 ResNet shapes; re-measured after the convolutions read
// A in place with prefetch and the buffers became huge pages, 6 x 64 wins (batch 16, 2 threads,
// `pneumo bench conv --pass P`, best of 2 alternating runs, the network's total ms 12 x 32 / 6 x
// 64): fwd 483 / 437, fwd-train 489 / 448, bwd-data 521 / 508, bwd-filter 519 / 516. Half the
// broadcasts per k step and one B panel covering the N = 64 shapes whole, so each A row is read
// once: conv2's reduce forward 9.9 -> 8.5 ms, conv4's strided reduce 5.8 -> 3.9, conv5's 3x3
// input gradient 15.9 -> 13.1. A tuning build (-DNK_AVX512_MR=... -DNK_AVX512_NV=...) can try
// others; mc % mr must stay 0.
#ifndef NK_AVX512_MR
#    define NK_AVX512_MR 6
#    define NK_AVX512_NV 4
#endif
#define NK_AVX512_TABLE nk_gemm_kernel_avx512
#include "kernels/cpu/gemm_avx512_impl.h"

// ukr_atb's prefetch threshold (see ATB_PF_ROWS), one global for both builds of the kernels.
int nk_atb_pf_min_ld = 64;

// ---- peak ----

double nk_fma_loop_avx512(int64_t iters)
{
    // 12 independent chains cover FMA latency (4 cycles) x 2 pipes with room to spare. Named
    // variables, not an array: with an array GCC keeps the chains in memory around the asm.
    const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
    __m512 x0 = _mm512_set1_ps(0.0f), x1 = _mm512_set1_ps(1.0f), x2 = _mm512_set1_ps(2.0f);
    __m512 x3 = _mm512_set1_ps(3.0f), x4 = _mm512_set1_ps(4.0f), x5 = _mm512_set1_ps(5.0f);
    __m512 x6 = _mm512_set1_ps(6.0f), x7 = _mm512_set1_ps(7.0f), x8 = _mm512_set1_ps(8.0f);
    __m512 x9 = _mm512_set1_ps(9.0f), x10 = _mm512_set1_ps(10.0f), x11 = _mm512_set1_ps(11.0f);
    for (int64_t it = 0; it < iters; it++) {
        x0  = _mm512_fmadd_ps(x0, m, a);
        x1  = _mm512_fmadd_ps(x1, m, a);
        x2  = _mm512_fmadd_ps(x2, m, a);
        x3  = _mm512_fmadd_ps(x3, m, a);
        x4  = _mm512_fmadd_ps(x4, m, a);
        x5  = _mm512_fmadd_ps(x5, m, a);
        x6  = _mm512_fmadd_ps(x6, m, a);
        x7  = _mm512_fmadd_ps(x7, m, a);
        x8  = _mm512_fmadd_ps(x8, m, a);
        x9  = _mm512_fmadd_ps(x9, m, a);
        x10 = _mm512_fmadd_ps(x10, m, a);
        x11 = _mm512_fmadd_ps(x11, m, a);
        // Keep the compiler from folding the loop; no code is emitted.
        __asm__ volatile("" : "+v"(x0), "+v"(x1), "+v"(x2), "+v"(x3), "+v"(x4), "+v"(x5));
        __asm__ volatile("" : "+v"(x6), "+v"(x7), "+v"(x8), "+v"(x9), "+v"(x10), "+v"(x11));
    }
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x0, x1), _mm512_add_ps(x2, x3)),
                             _mm512_add_ps(_mm512_add_ps(x4, x5), _mm512_add_ps(x6, x7)));
    s        = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(x8, x9), _mm512_add_ps(x10, x11)));
    volatile float keep = _mm512_reduce_add_ps(s);
    (void)keep;
    return (double)iters * 12 * 16 * 2;
}
