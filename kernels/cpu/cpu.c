/*
 * cpu.c: run-time CPU feature detection for the fast CPU paths (nk_cpu_detect, nk_isa_name) and
 * the FMA peak measurement (nk_fma_peak_gflops) that benchmarks divide by. Plain C: the SIMD
 * loops live in gemm_avx512.c / gemm_avx2.c. NK_ISA=scalar|avx2|avx512 in the environment caps
 * the detected level (for tests); it can never raise it. The same for the bf16 unit
 * (nk_cpu_bf16: AVX512_BF16 or AMX, capped by NK_BF16) and its peak.
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__x86_64__)
#    include <cpuid.h>
#endif

#include "kernels/cpu/cpu_internal.h"
#include "kernels/nk.h"

// arch_prctl's request for an XSAVE feature's state, and the AMX tile data's feature number
// (<asm/prctl.h> of Linux 5.16+; spelled out for older headers).
#ifndef ARCH_REQ_XCOMP_PERM
#    define ARCH_REQ_XCOMP_PERM 0x1023
#endif
#define XFEATURE_XTILEDATA 18

static nk_isa detect_hw(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma"))
        return NK_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return NK_ISA_AVX2;
    return NK_ISA_SCALAR;
}

// Cached after the first call; racing first calls compute the same value, so a relaxed atomic is
// enough. -1 means not detected yet.
static int isa_cached = -1;

nk_isa nk_cpu_detect(void)
{
    int v = __atomic_load_n(&isa_cached, __ATOMIC_RELAXED);
    if (v >= 0) return (nk_isa)v;
    nk_isa isa      = detect_hw();
    const char *env = getenv("NK_ISA");
    if (env) {
        nk_isa cap = isa;
        if (strcmp(env, "scalar") == 0)
            cap = NK_ISA_SCALAR;
        else if (strcmp(env, "avx2") == 0)
            cap = NK_ISA_AVX2;
        else if (strcmp(env, "avx512") == 0)
            cap = NK_ISA_AVX512;
        if (cap < isa) isa = cap;
    }
    __atomic_store_n(&isa_cached, (int)isa, __ATOMIC_RELAXED);
    return isa;
}

const char *nk_isa_name(nk_isa isa)
{
    switch (isa) {
    case NK_ISA_SCALAR:
        return "scalar";
    case NK_ISA_AVX2:
        return "avx2";
    case NK_ISA_AVX512:
        return "avx512";
    }
    return "unknown";
}

// ---- peak ----

double nk_fma_loop_scalar(int64_t iters)
{
    // 8 independent chains of scalar multiply-adds (fmaf would be a libm call without -mfma).
    float x0 = 0, x1 = 1, x2 = 2, x3 = 3, x4 = 4, x5 = 5, x6 = 6, x7 = 7;
    for (int64_t it = 0; it < iters; it++) {
        x0 = x0 * 0.999999f + 1e-7f;
        x1 = x1 * 0.999999f + 1e-7f;
        x2 = x2 * 0.999999f + 1e-7f;
        x3 = x3 * 0.999999f + 1e-7f;
        x4 = x4 * 0.999999f + 1e-7f;
        x5 = x5 * 0.999999f + 1e-7f;
        x6 = x6 * 0.999999f + 1e-7f;
        x7 = x7 * 0.999999f + 1e-7f;
        // Keep the compiler from folding the loop; no code is emitted.
        __asm__ volatile("" : "+x"(x0), "+x"(x1), "+x"(x2), "+x"(x3));
        __asm__ volatile("" : "+x"(x4), "+x"(x5), "+x"(x6), "+x"(x7));
    }
    volatile float keep = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
    (void)keep;
    return (double)iters * 8 * 2;
}

// Runs `loop` (it returns the flops it did) on nthreads threads for about `seconds`, as the
// best of ten windows: on a shared machine one window can lose a thread to the hypervisor (a
// single 0.5 s window once read 117 GFLOP/s on a 226 GFLOP/s machine).
static double peak_gflops(double (*loop)(int64_t), int nthreads, double seconds)
{
    double best = 0;
    for (int w = 0; w < 10; w++) {
        double total = 0, wall = 0;
#pragma omp parallel num_threads(nthreads) reduction(+ : total) reduction(max : wall)
        {
            loop(1000); // warm the clocks up
#pragma omp barrier
            double t0 = omp_get_wtime(), t = 0;
            do {
                total += loop(1 << 18);
                t = omp_get_wtime() - t0;
            } while (t < seconds / 10);
            wall = t;
        }
        if (wall > 0 && total / wall * 1e-9 > best) best = total / wall * 1e-9;
    }
    return best;
}

double nk_fma_peak_gflops(nk_isa isa, int nthreads, double seconds)
{
    nk_isa have = nk_cpu_detect();
    if (isa > have) isa = have;
    if (nthreads < 1) nthreads = 1;
    double (*loop)(int64_t) = isa == NK_ISA_AVX512 ? nk_fma_loop_avx512
                              : isa == NK_ISA_AVX2 ? nk_fma_loop_avx2
                                                   : nk_fma_loop_scalar;
    return peak_gflops(loop, nthreads, seconds);
}

// ---- bf16 ----

// Cached like isa_cached; -1 means not detected yet.
static int bf16_cached = -1;

// AMX-TILE and AMX-BF16 in CPUID, the OS saving the tile state (XCR0 bits 17 and 18), and this
// process granted it (Linux 5.16+ asks each process to request it before its first tile
// instruction; the grant covers all its threads).
static int amx_usable(void)
{
#if defined(__x86_64__) && defined(__linux__)
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(d & (1u << 22)) || !(d & (1u << 24))) return 0;               // AMX-BF16, AMX-TILE
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; // OSXSAVE
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return 0;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return 0;
#endif
}

nk_bf16_impl nk_cpu_bf16(void)
{
    int v = __atomic_load_n(&bf16_cached, __ATOMIC_RELAXED);
    if (v >= 0) return (nk_bf16_impl)v;
    nk_bf16_impl impl = NK_BF16_NONE;
    const char *env   = getenv("NK_BF16");
    __builtin_cpu_init();
    if (env && strcmp(env, "amx-emulated") == 0) {
        // The C model of the AMX kernels for everything, on any CPU: tests of the whole bf16
        // model path where the CPU has no bf16 unit (slow; never for timing).
        impl = NK_BF16_AMX_EMU;
    } else if (nk_cpu_detect() >= NK_ISA_AVX512 && __builtin_cpu_supports("avx512bf16")) {
        // The AMX table finishes tiles with AVX512_BF16 code, so AMX needs it too; the
        // permission request (the one call here with a side effect) comes last.
        impl = NK_BF16_AVX512;
        if (env && strcmp(env, "none") == 0)
            impl = NK_BF16_NONE;
        else if (!(env && strcmp(env, "avx512") == 0) && amx_usable())
            impl = NK_BF16_AMX;
    }
    __atomic_store_n(&bf16_cached, (int)impl, __ATOMIC_RELAXED);
    return impl;
}

int nk_bf16_hw(void)
{
    const nk_bf16_impl b = nk_cpu_bf16();
    return b == NK_BF16_AVX512 || b == NK_BF16_AMX;
}

int nk_bf16_impls(nk_bf16_impl out[4])
{
    int n    = 0;
    out[n++] = NK_BF16_NONE;
    out[n++] = NK_BF16_AMX_EMU;
    if (nk_bf16_hw())
        for (int i = NK_BF16_AVX512; i <= (int)nk_cpu_bf16(); i++)
            out[n++] = (nk_bf16_impl)i;
    return n;
}

const char *nk_bf16_impl_name(nk_bf16_impl impl)
{
    switch (impl) {
    case NK_BF16_NONE:
        return "bf16-emulated";
    case NK_BF16_AVX512:
        return "avx512bf16";
    case NK_BF16_AMX:
        return "amx";
    case NK_BF16_AMX_EMU:
        return "amx-emulated";
    }
    return "unknown";
}

double nk_bf16_peak_gflops(int nthreads, double seconds)
{
    if (!nk_bf16_hw()) return 0.0;
    if (nthreads < 1) nthreads = 1;
    return peak_gflops(nk_cpu_bf16() == NK_BF16_AMX ? nk_amx_loop : nk_bf16_loop_avx512, nthreads,
                       seconds);
}
