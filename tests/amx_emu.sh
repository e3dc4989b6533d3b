#!/bin/sh
# The bf16 model path (the fast bf16 convolutions, bf16 activations, the bf16 training step on
# the shipped model, chunking) on the AMX kernels' C model (NK_BF16=amx-emulated), so that it
# runs on every CPU, not only where there is an AVX512_BF16 or AMX unit: `test_model bf16`
# against the float32 model and the bf16 reference, and `pneumo predict` in bf16 against float32.
# The benchmark refuses to time the model.
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
# The command line on it: `pneumo predict` with the shipped model in float32 and in bf16 (the
# emulated AMX kernels): the same labels, probabilities within 0.05, and not bit-equal.
M=weights/pneumo-resnet50.safetensors
if [ -f $M ]; then
    for dt in f32 bf16; do
        NK_BF16=amx-emulated PNEUMO_DTYPE=$dt $P predict --model $M --format jsonl \
            --out $T/$dt.jsonl data/samples > $T/$dt.log 2>&1 || bad "predict $dt: $(tail -n 1 $T/$dt.log)"
    done
    r=$(python3 - $T/f32.jsonl $T/bf16.jsonl << 'PY'
import json, sys
f, b = ({r["source"]: r for r in map(json.loads, open(p))} for p in sys.argv[1:3])
dp = max(abs(f[k]["probability"] - b[k]["probability"]) for k in f)
same = all(f[k]["label"] == b[k]["label"] for k in f)
print("ok" if len(f) == 3 and set(f) == set(b) and same and 0 < dp < 0.05 else "bad", len(f), dp)
PY
)
    case "$r" in ok*) ok "predict bf16 (amx-emulated) vs f32 on data/samples: $r" ;;
    *) bad "predict bf16 (amx-emulated) vs f32 on data/samples: $r" ;; esac
else
    bad "no $M"
fi
finish amx_emu
