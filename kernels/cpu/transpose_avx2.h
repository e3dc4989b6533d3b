/*
 * transpose_avx2.h: the in-register 8x8 float transpose that the AVX2 code shares (gemm_avx2.c's
 * packers, winograd_avx2.c's turned filters). Include only from files compiled with -mavx2.
 */
#ifndef NK_TRANSPOSE_AVX2_H
#define NK_TRANSPOSE_AVX2_H

#include <immintrin.h>

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

#endif
