/*
 * gemm_amx.c: the bf16 GEMM kernels of gemm_amx_impl.h on AMX tiles (TDPBF16PS), and the
 * TDPBF16PS peak loop. Compiled with -mamx-tile -mamx-bf16 (and AVX-512: the finish and the
 * rounding are gemm_avx512bf16.c's); reached only through nk_bf16_kernel_amx after cpu.c has found
 * AMX-TILE and AMX-BF16 and the kernel has granted this process the tile data
 * (arch_prctl(ARCH_REQ_XCOMP_PERM)). The same kernels run on every machine's tests through
 * gemm_amx_emu.c; tests/test_gemm.c and tests/test_ops.c run this copy where AMX is present.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/cpu_internal.h"

#define AMX_NAME(f)         amx_##f
#define AMX_LDCFG(cfg)      _tile_loadconfig(cfg)
#define AMX_ZERO(t)         _tile_zero(t)
#define AMX_LOAD(t, p, st)  _tile_loadd(t, p, st)
#define AMX_STORE(t, p, st) _tile_stored(t, p, st)
#define AMX_DP(c, a, b)     _tile_dpbf16ps(c, a, b)
#define AMX_FIN             nk_bf16_fin_avx512
#define AMX_CONVERT         nk_bf16_convert_avx512
#define AMX_TABLE           nk_bf16_kernel_amx
#include "kernels/cpu/gemm_amx_impl.h"

// ---- peak ----

double nk_amx_loop(int64_t iters)
{
    // Four 16 x 16 float32 accumulators, two A and two B tiles of 16 x 32 bf16, all in registers:
    // the 2 x 2 block of the kernels. Each TDPBF16PS is 16 * 16 * 32 multiply-adds. The values
    // are the VDPBF16PS loop's (1.0 times about 1e-7: nonzero, and the sums stay small).
    uint16_t a[16 * 32] __attribute__((aligned(64))), b[16 * 32] __attribute__((aligned(64)));
    for (int i = 0; i < 16 * 32; i++)
        a[i] = 0x3f80, b[i] = 0x33d6;
    amx_zero_c(); // configures the tiles too
    _tile_loadd(4, a, 64);
    _tile_loadd(5, a, 64);
    _tile_loadd(6, b, 64);
    _tile_loadd(7, b, 64);
    for (int64_t it = 0; it < iters; it++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    float keep[16 * 16] __attribute__((aligned(64)));
    _tile_stored(0, keep, 64);
    __asm__ volatile("" : : "r"(keep) : "memory");
    return (double)iters * 4 * 16 * 16 * 32 * 2;
}
