#!/bin/sh
# amx-check.sh: builds the CPU kernels (kernels/ref, kernels/cpu) and tests/test_gemm and
# tests/test_ops with nothing but a C compiler, then, where the CPU has AMX, runs them (every
# bf16 check runs on the AMX tiles as well as on AVX512_BF16 and the emulated forms) and prints
# the measured TDPBF16PS and VDPBF16PS peaks. For a machine that lacks the project's other
# dependencies (a GPU host, say): `sh scripts/amx-check.sh [BUILD_DIR]`. Prints SKIP and exits 0
# where the CPU has no AMX.
set -eu
B=${1:-build-amx}
grep -m1 'model name' /proc/cpuinfo || true
if ! grep -q 'amx_bf16' /proc/cpuinfo; then
    echo "SKIP no amx_bf16 in /proc/cpuinfo"
    exit 0
fi
OBJS=$(for f in kernels/ref/*.c kernels/cpu/*.c; do echo "$B/${f%.*}.o"; done)
make -s -j"$(nproc)" BUILD="$B" CUDA=0 WERROR=1 $OBJS
CC="cc -std=c11 -D_GNU_SOURCE -fopenmp -I. -O2 -Wall -Wextra -Werror -Wno-unused-parameter"
cat >"$B/amx_peak.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include "kernels/nk.h"
int main(void)
{
    printf("bf16 impl: %s\n", nk_bf16_impl_name(nk_cpu_bf16()));
    for (int t = 1; t <= 2; t++)
        printf("bf16 peak, %d thread(s): %.1f GFLOP/s\n", t, nk_bf16_peak_gflops(t, 0.5));
    return nk_cpu_bf16() == NK_BF16_AMX ? 0 : 1;
}
C
for t in test_gemm test_ops; do
    $CC -o "$B/$t" "tests/$t.c" $OBJS -lm -lpthread
done
$CC -o "$B/amx_peak" "$B/amx_peak.c" $OBJS -lm -lpthread
"$B/amx_peak"
NK_BF16=avx512 "$B/amx_peak" || true # the same loops on VDPBF16PS (exits 1: not AMX)
for t in test_gemm test_ops; do
    "$B/$t" >"$B/$t.log" 2>&1 || { grep -m 20 FAIL "$B/$t.log"; tail -1 "$B/$t.log"; exit 1; }
    echo "$t: $(grep -c ' amx ' "$B/$t.log") checks on AMX; $(tail -1 "$B/$t.log")"
done
