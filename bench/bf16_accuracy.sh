#!/bin/sh
# bf16_accuracy.sh: how far bf16 inference (nt_ctx_opts.dtype = NT_DTYPE_BF16, through
# PNEUMO_DTYPE) moves the shipped model's outputs from float32: per-image max |dp| with
# `pneumo predict`, and the ROC AUC difference with `pneumo eval`, on the val images plus every
# STEP-th training image of each class (the model was trained on those, so this measures
# agreement between the dtypes, not the model's quality). Goal: |dAUC| <= 0.002.
#
#   sh bench/bf16_accuracy.sh [MODEL] [DATA_ROOT] [STEP]     (defaults below; needs build/pneumo)
set -eu
PNEUMO=${PNEUMO:-build/pneumo}
MODEL=${1:-weights/pneumo-resnet50.safetensors}
ROOT=${2:-/work/shared/data/chest_xray}
STEP=${3:-10}
PY=${PY:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for c in NORMAL PNEUMONIA; do
    mkdir -p "$tmp/data/$c"
    for f in "$ROOT/val/$c"/*; do ln -s "$f" "$tmp/data/$c/val-$(basename "$f")"; done
    if [ -d "$ROOT/train/$c" ]; then
        ls "$ROOT/train/$c" | awk -v s="$STEP" 'NR % s == 1' | while read -r f; do
            ln -s "$ROOT/train/$c/$f" "$tmp/data/$c/train-$f"
        done
    fi
done
for dt in f32 bf16; do
    PNEUMO_DTYPE=$dt "$PNEUMO" predict --model "$MODEL" --format jsonl --batch 16 \
        --out "$tmp/$dt.jsonl" "$tmp/data" 2>"$tmp/$dt.err" || { cat "$tmp/$dt.err"; exit 1; }
    PNEUMO_DTYPE=$dt "$PNEUMO" eval --model "$MODEL" --data "$tmp/data" --json --boot 0 \
        >"$tmp/$dt.eval.json" 2>"$tmp/$dt.eval.err" || { cat "$tmp/$dt.eval.err"; exit 1; }
done
"$PY" - "$tmp" <<'PYEOF'
import json, sys
d = sys.argv[1]
def probs(dt):
    out = {}
    for line in open(f"{d}/{dt}.jsonl"):
        r = json.loads(line)
        if "probability" in r:
            out[r["source"]] = (r["probability"], r["label"])
    return out
f, b = probs("f32"), probs("bf16")
keys = sorted(set(f) & set(b))
dp = [abs(f[k][0] - b[k][0]) for k in keys]
flips = sum(f[k][1] != b[k][1] for k in keys)
def auc(dt):
    j = json.load(open(f"{d}/{dt}.eval.json"))
    m = j.get("metrics", j)
    return m["auc"]
af, ab = auc("f32"), auc("bf16")
dp_sorted = sorted(dp)
print(f"bf16_vs_f32 images={len(keys)} max_abs_dp={max(dp):.3g} "
      f"mean_abs_dp={sum(dp)/len(dp):.3g} p99_abs_dp={dp_sorted[int(0.99*(len(dp)-1))]:.3g} "
      f"label_flips={flips} auc_f32={af:.6f} auc_bf16={ab:.6f} dauc={ab-af:+.6f} "
      f"{'ok' if abs(ab-af) <= 0.002 else 'OVER_GOAL'}")
PYEOF
