/*
 * epi_avx512.h: what the AVX-512 micro-kernels' stores share: the column mask of a ragged right
 * edge and one vector of the fused epilogue (gemm_avx512_impl.h for float32 outputs,
 * gemm_avx512bf16.c for bf16 ones). Include only from files compiled with -mavx512f -mavx512bw.
 */
#ifndef NK_EPI_AVX512_H
#define NK_EPI_AVX512_H

#include <immintrin.h>
#include <stdint.h>

// Columns [16v, 16v + 16) of a tile n columns wide, as a mask (0 past n).
static inline __mmask16 col_mask(int n, int v)
{
    int left = n - 16 * v;
    if (left >= 16) return (__mmask16)0xFFFF;
    if (left <= 0) return 0;
    return (__mmask16)((1u << left) - 1u);
}

// One 16-column vector of the fused epilogue, in nk_tile_epi_fn's order: + bias (vb), then
// * scale + shift (vs, vh), then + the residual at res (float32) or resb (bf16) (masked by k;
// NULL: none), then ReLU. bias and sc say whether vb and vs/vh apply.
static inline __m512 epi_vec(__m512 v, __mmask16 k, const float *bias, __m512 vb, const float *sc,
                             __m512 vs, __m512 vh, const float *res, const uint16_t *resb, int relu)
{
    if (bias) v = _mm512_add_ps(v, vb);
    if (sc) v = _mm512_fmadd_ps(v, vs, vh);
    if (res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, res));
    if (resb) {
        const __m256i r = _mm256_maskz_loadu_epi16(k, resb);
        v = _mm512_add_ps(v, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(r), 16)));
    }
    // MAXPS returns its second operand when the first is NaN: NaN -> 0, as the refs.
    if (relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
    return v;
}

#endif
