/*
 * winograd_avx512.c: the Winograd F(4x4, 3x3) transforms of winograd_impl.h in 512-bit registers,
 * 16 channels a vector (the Makefile gives *_avx512.c its flags; winograd.c picks the table by the
 * CPU).
 */
#include <immintrin.h>
#include <stdint.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/transpose_avx512.h"

typedef __m512 vf;
#define VL         16
#define vzero      _mm512_setzero_ps
#define vset1      _mm512_set1_ps
#define vadd       _mm512_add_ps
#define vsub       _mm512_sub_ps
#define vmul       _mm512_mul_ps
#define vfmadd     _mm512_fmadd_ps
#define vfnmadd    _mm512_fnmadd_ps
#define vmax       _mm512_max_ps
#define vload      _mm512_loadu_ps
#define vstore     _mm512_storeu_ps
#define vstream    _mm512_stream_ps
#define WINO_TABLE nk_wino_kernel_avx512
#define WINO_ISA   NK_ISA_AVX512
#define WINO_GEMM  nk_gemm_kernel_avx512

// 16 channels at p as float32, from float32 or (bf) bf16 (exact: bf16 is float32's top half).
static inline __m512 vload_x(const void *p, int bf)
{
    if (!bf) return _mm512_loadu_ps(p);
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

// Rounds 16 floats to bf16 as nk_f32_to_bf16 does (nearest even; zeros and denormals to a signed
// zero, NaNs quiet) and stores them at p.
static inline void vstore_bf16(uint16_t *p, __m512 v)
{
    const __m512i u = _mm512_castps_si512(v), hi = _mm512_srli_epi32(u, 16);
    const __m512i exp   = _mm512_and_si512(u, _mm512_set1_epi32(0x7f800000));
    const __m512i mag   = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
    const __mmask16 zd  = _mm512_cmpeq_epi32_mask(exp, _mm512_setzero_si512());
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(mag, _mm512_set1_epi32(0x7f800000));
    const __m512i odd   = _mm512_and_si512(hi, _mm512_set1_epi32(1));
    __m512i r           = _mm512_srli_epi32(
                  _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd)), 16);
    r = _mm512_mask_mov_epi32(r, zd, _mm512_and_si512(hi, _mm512_set1_epi32(0x8000)));
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x0040)));
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(r));
}

// dst[j][i] = src[i * ldc + j] for a 16 x 16 block.
static inline void transpose16x16(const float *src, int64_t ldc, float dst[16][16])
{
    __m512 r[16];
    for (int i = 0; i < 16; i++)
        r[i] = _mm512_loadu_ps(src + i * ldc);
    transpose16(r);
    for (int j = 0; j < 16; j++)
        _mm512_store_ps(dst[j], r[j]);
}

#include "kernels/cpu/winograd_impl.h"
