#!/bin/sh
# Runs pneumo's model benchmarks and the PyTorch peer side by side in one run and writes
# bench/RESULTS.md (machine, command, date, figures, ratios). Needs `make` and, for the peer,
# Debian's python3-torch (scripts/install-deps.sh --bench). Usage: sh bench/run.sh [THREADS]
set -e
cd "$(dirname "$0")/.."
T=${1:-2}
P=build/pneumo
make -s all bench >/dev/null
OUT=$(mktemp); GEMM=$(mktemp); trap 'rm -f "$OUT" "$GEMM"' EXIT
log() { echo "$@" | tee -a "$OUT"; }
$P bench peak --threads "$T" | tee -a "$OUT"
PEAK=$(grep -m1 "op=peak.*threads=$T " "$OUT" | sed -n 's/.*gflops=\([0-9.]*\).*/\1/p')
$P bench model --threads "$T" --batch 16 --peak "$PEAK" | tee -a "$OUT"
$P bench model --threads "$T" --batch 1 --repeat 9 --no-check --peak "$PEAK" | tee -a "$OUT"
$P bench model --threads "$T" --batch 16 --train --unfreeze 20 --no-check --repeat 3 --peak "$PEAK" | tee -a "$OUT"
$P bench model --threads "$T" --batch 16 --train --unfreeze all --no-check --repeat 3 --peak "$PEAK" | tee -a "$OUT"
# GEMM beside OpenBLAS (when the bench was built with it), same process, same shapes.
./build/bench/bench_gemm | tee "$GEMM"
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    /usr/bin/python3 bench/torch_resnet50.py --threads "$T" --batch 16 | tee -a "$OUT"
    /usr/bin/python3 bench/torch_resnet50.py --threads "$T" --batch 1 --repeat 9 --variants eager,jit_frozen | tee -a "$OUT"
    /usr/bin/python3 bench/torch_resnet50.py --threads "$T" --batch 16 --train last20 --repeat 3 | tee -a "$OUT"
    /usr/bin/python3 bench/torch_resnet50.py --threads "$T" --batch 16 --train all --repeat 3 | tee -a "$OUT"
else
    log "PyTorch not installed (scripts/install-deps.sh --bench): no peer figures"
fi
# The table: pneumo's images/s beside PyTorch's best variant for the same mode and batch.
val() { grep -E "$1" "$OUT" | head -n 1 | sed -n "s/.*$2=\([0-9.]*\).*/\1/p"; }
best_torch() { grep -E "impl=pytorch.*batch=$1 .*mode=$2" "$OUT" | grep -E "$3" | sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p' | sort -g | tail -n 1; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk "BEGIN{printf \"%.2fx\", $1/$2}" || echo "-"; }
row() { # label pneumo-pattern batch mode torch-filter
    p=$(val "$2" images_per_s); pct=$(val "$2" pct_peak); t=$(best_torch "$3" "$4" "$5")
    echo "| $1 | ${p:--} | ${pct:--} | ${t:--} | $(ratio "$p" "$t") |"
}
{
    echo "## ResNet50 fp32, $(date -u +%Y-%m-%d), $T threads"
    echo
    echo "Machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) CPUs; kernels $(grep -m1 -o 'impl=[a-z0-9]*' "$OUT" | cut -d= -f2)."
    echo "Command: \`sh bench/run.sh $T\` (pneumo $(build/pneumo version | head -n 1 | cut -d' ' -f2), git $(git rev-parse --short HEAD 2>/dev/null || echo '?'))."
    echo "Peak (measured FMA loop): $(val 'op=peak.*threads='"$T" gflops) GFLOP/s."
    echo
    echo "| case | pneumo images/s | % of peak | PyTorch images/s (best variant) | ratio |"
    echo "|---|---|---|---|---|"
    row "inference, batch 16" "mode=infer.*batch=16 " 16 infer "."
    row "inference, batch 1" "mode=infer.*batch=1 " 1 infer "."
    row "training step, batch 16, last 20 layers + head" "mode=train unfreeze=20 .*batch=16 " 16 train "unfreeze=last20"
    row "training step, batch 16, all layers" "mode=train unfreeze=-1 .*batch=16 " 16 train "unfreeze=all"
    echo
    echo "Operation counts are those of Keras's v1 network (stride on the 1x1 convolutions): 7.71"
    echo "GFLOP per 224x224 image forward, conv and dense multiply-adds x 2."
    echo
    echo "SGEMM on ResNet50's shapes, $T threads (\`build/bench/bench_gemm\`; M = batch x P x Q):"
    echo
    echo "| shape | M | N | K | pneumo GFLOP/s | % of peak | OpenBLAS GFLOP/s | ratio |"
    echo "|---|---|---|---|---|---|---|---|"
    grep "op=sgemm.* threads=$T " "$GEMM" | while read -r line; do
        f() { printf '%s' "$line" | sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
        echo "| $(f shape) | $(f M) | $(f N) | $(f K) | $(f gflops) | $(f pct_peak) | $(f openblas_gflops) | $(f ratio_vs_openblas) |"
    done
    echo
    echo "Raw output:"
    echo
    echo '```'
    cat "$OUT" "$GEMM"
    echo '```'
    echo
} > bench/RESULTS.new.md
[ -f bench/RESULTS.md ] || printf '# Benchmark results\n\nNewest first. Each section is one run of the command it names.\n\n' > bench/RESULTS.md
{ sed -n '1,4p' bench/RESULTS.md; cat bench/RESULTS.new.md; sed -n '5,$p' bench/RESULTS.md; } > bench/RESULTS.tmp
mv bench/RESULTS.tmp bench/RESULTS.md; rm -f bench/RESULTS.new.md
echo "bench/RESULTS.md updated"
