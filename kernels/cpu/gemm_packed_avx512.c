/*
 * gemm_packed_avx512.c: the AVX-512 SGEMM kernels of gemm_avx512_impl.h with the 12 x 32
 * register block (nk_gemm_kernel_avx512_12x32), for the fully packed GEMM (nk_sgemm_cpu: A and
 * B both packed per block; the dense layers, the large weight gradients, `pneumo bench gemm`).
 * There 6 x 64 lost what it won on the convolutions (2 threads, GFLOP/s, 12 x 32 / 6 x 64, 3
 * runs alternating): M x N x K = 3136 x 64 x 256 173 / 147, 12544 x 64 x 147 171 / 141,
 * 784 x 128 x 1152 192 / 175, 196 x 256 x 2304 183 / 173, 256^3 190 / 175; 1024^3 205 / 208.
 * Likely why: its B micro-panel (256 k x 32, 32 KiB) fits L1, 6 x 64's (64 KiB) does not.
 */
#include <immintrin.h>

#include "kernels/cpu/cpu_internal.h"

#define NK_AVX512_MR    12
#define NK_AVX512_NV    2
#define NK_AVX512_TABLE nk_gemm_kernel_avx512_12x32
#include "kernels/cpu/gemm_avx512_impl.h"
