/*
 * transpose_avx512.h: the in-register 16x16 float transpose that the AVX-512 packers share
 * (gemm_avx512.c for fp32 panels, gemm_avx512bf16.c for bf16 pair panels, where each 32-bit lane
 * holds one pair). Include only from files compiled with -mavx512f.
 */
#ifndef NK_TRANSPOSE_AVX512_H
#define NK_TRANSPOSE_AVX512_H

#include <immintrin.h>

// In-register transpose of a 16x16 block: r[i] holds row i on entry, column i on exit.
static inline __attribute__((always_inline)) void transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i]     = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        for (int j = 0; j < 2; j++) {
            __m512d x = _mm512_castps_pd(t[i + j]), y = _mm512_castps_pd(t[i + 2 + j]);
            r[i + j]     = _mm512_castpd_ps(_mm512_unpacklo_pd(x, y));
            r[i + 2 + j] = _mm512_castpd_ps(_mm512_unpackhi_pd(x, y));
        }
    }
    // r[i..i+3] now hold 4x4 blocks per 128-bit lane; interleave lanes across groups of 4 rows.
    for (int i = 0; i < 4; i++) {
        __m512 a0 = r[i], a1 = r[4 + i], a2 = r[8 + i], a3 = r[12 + i];
        __m512 b0 = _mm512_shuffle_f32x4(a0, a1, 0x88); // lanes 0,2 of a0 | 0,2 of a1
        __m512 b1 = _mm512_shuffle_f32x4(a0, a1, 0xDD); // lanes 1,3
        __m512 b2 = _mm512_shuffle_f32x4(a2, a3, 0x88);
        __m512 b3 = _mm512_shuffle_f32x4(a2, a3, 0xDD);
        t[i]      = _mm512_shuffle_f32x4(b0, b2, 0x88); // lane 0 of each
        t[8 + i]  = _mm512_shuffle_f32x4(b0, b2, 0xDD); // lane 2
        t[4 + i]  = _mm512_shuffle_f32x4(b1, b3, 0x88); // lane 1
        t[12 + i] = _mm512_shuffle_f32x4(b1, b3, 0xDD); // lane 3
    }
    // After the two in-lane steps, lane L of r[4g + i] holds rows 4g..4g+3 of columns 4L + i'
    // where i' follows the unpack order (0, 2, 1, 3); undo that permutation here.
    static const int perm[4] = {0, 2, 1, 3};
    for (int L = 0; L < 4; L++)
        for (int i = 0; i < 4; i++)
            r[4 * L + perm[i]] = t[4 * L + i];
}

#endif
