#!/bin/sh
# The bf16 model path (the fast bf16 convolutions, bf16 activations, the bf16 training step on
# the shipped model, chunking) on the AMX kernels' C model (NK_BF16=amx-emulated), so that it
# runs on every CPU, not only where there is an AVX512_BF16 or AMX unit: `test_model bf16`
# against the float32 model and the bf16 reference. And the benchmark refuses to time the model.
. tests/lib.sh
B=${BUILD:-build}/tests/test_model
[ -x $B ] || { echo "SKIP needs $B (make)"; exit 77; }
if NK_BF16=amx-emulated $B bf16 > $T/bf16.log 2>&1; then
    ok "test_model bf16 on the emulated AMX kernels: $(tail -n 1 $T/bf16.log)"
else
    bad "test_model bf16 on the emulated AMX kernels: $(grep -m 3 FAIL $T/bf16.log | tr '\n' ' ')"
fi
grep -q 'kernels: .*+amx-emulated' $T/bf16.log && ok "the bf16 context ran amx-emulated" ||
    bad "the bf16 context did not run amx-emulated: $(grep -m1 kernels: $T/bf16.log)"
grep -q 'SKIP' $T/bf16.log && bad "a bf16 model test skipped: $(grep -m1 SKIP $T/bf16.log)" ||
    ok "no bf16 model test skipped"
expect 1 'got NK_BF16=amx-emulated' -- env NK_BF16=amx-emulated $P bench peak --dtype bf16
finish amx_emu
