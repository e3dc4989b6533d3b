/*
 * winograd_avx2.c: the Winograd F(4x4, 3x3) transforms of winograd_impl.h in 256-bit registers, 8
 * channels a vector, for CPUs with AVX2 and FMA but not AVX-512 (the Makefile gives *_avx2.c its
 * flags; winograd.c picks the table by the CPU).
 */
#include <immintrin.h>
#include <stdint.h>

#include "kernels/cpu/cpu_internal.h"
#include "kernels/cpu/transpose_avx2.h"

typedef __m256 vf;
#define VL         8
#define vzero      _mm256_setzero_ps
#define vset1      _mm256_set1_ps
#define vadd       _mm256_add_ps
#define vsub       _mm256_sub_ps
#define vmul       _mm256_mul_ps
#define vfmadd     _mm256_fmadd_ps
#define vfnmadd    _mm256_fnmadd_ps
#define vmax       _mm256_max_ps
#define vload      _mm256_loadu_ps
#define vstore     _mm256_storeu_ps
#define vstream    _mm256_stream_ps
#define WINO_TABLE nk_wino_kernel_avx2
#define WINO_ISA   NK_ISA_AVX2
#define WINO_GEMM  nk_gemm_kernel_avx2

// 8 channels at p as float32, from float32 or (bf) bf16 (exact: bf16 is float32's top half).
static inline vf vload_x(const void *p, int bf)
{
    if (!bf) return _mm256_loadu_ps(p);
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

// Rounds 8 floats to bf16 as nk_f32_to_bf16 does (nearest even; zeros and denormals to a signed
// zero, NaNs quiet) and stores them at p.
static inline void vstore_bf16(uint16_t *p, vf v)
{
    const __m256i u = _mm256_castps_si256(v), hi = _mm256_srli_epi32(u, 16);
    const __m256i exp = _mm256_and_si256(u, _mm256_set1_epi32(0x7f800000));
    const __m256i mag = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    const __m256i zd  = _mm256_cmpeq_epi32(exp, _mm256_setzero_si256());
    const __m256i nan = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7f800000));
    const __m256i odd = _mm256_and_si256(hi, _mm256_set1_epi32(1));
    __m256i r         = _mm256_srli_epi32(
                _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd)), 16);
    r = _mm256_blendv_epi8(r, _mm256_and_si256(hi, _mm256_set1_epi32(0x8000)), zd);
    r = _mm256_blendv_epi8(r, _mm256_or_si256(hi, _mm256_set1_epi32(0x0040)), nan);
    // Each 32-bit lane holds its 16-bit result: pack (per 128-bit lane), then gather both halves.
    const __m256i pk = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128((__m128i *)p, _mm256_castsi256_si128(pk));
}

// dst[j][i] = src[i * ldc + j] for a 16 x 16 block, as four 8 x 8 transposes.
static inline void transpose16x16(const float *src, int64_t ldc, float dst[16][16])
{
    for (int i0 = 0; i0 < 16; i0 += 8) {
        for (int j0 = 0; j0 < 16; j0 += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = _mm256_loadu_ps(src + (i0 + i) * ldc + j0);
            transpose8(r);
            for (int j = 0; j < 8; j++)
                _mm256_store_ps(&dst[j0 + j][i0], r[j]);
        }
    }
}

#include "kernels/cpu/winograd_impl.h"
