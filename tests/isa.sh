#!/bin/sh
# The kernels' lower-ISA paths on a machine that has more: tests/test_ops again with the CPU
# capped by NK_ISA (kernels/cpu/cpu.c). test_ops itself passes every ISA to the kernels that take
# one; the code that picks its build from the CPU at run time (the copies of bn_impl.h and
# pool_impl.h, the Winograd transforms) reaches its lower builds only this way on a machine that
# has more (AVX2 and baseline on AVX-512, baseline on AVX2).
. tests/lib.sh
B=${BUILD:-build}/tests/test_ops
[ -x $B ] || { echo "SKIP needs $B (make)"; exit 77; }
for isa in avx2 scalar; do
    if NK_ISA=$isa $B > $T/$isa.log 2>&1; then
        ok "test_ops with NK_ISA=$isa: $(tail -n 1 $T/$isa.log)"
    else
        bad "test_ops with NK_ISA=$isa: $(grep -m 3 FAIL $T/$isa.log | tr '\n' ' ')"
    fi
done
finish isa
