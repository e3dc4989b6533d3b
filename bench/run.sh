#!/bin/sh
# Runs pneumo's benchmarks and its peers side by side in one run and writes bench/RESULTS.md
# (machine, command, date, figures, ratios):
#   - peaks: the fp32 FMA loop and the bf16 VDPBF16PS loop, TDPBF16PS on AMX (`pneumo bench peak
#     [--dtype bf16]`), 1 and THREADS threads;
#   - ResNet50 inference (fp32 and bf16, batch 16 and 1) and training steps (last 20 layers, all)
#     beside PyTorch (eager, channels_last, jit-frozen, bf16 autocast; bench/torch_resnet50.py);
#     fp32/bf16 inference at 1 thread too, for the scaling; on AMX also bf16 inference on
#     VDPBF16PS (NK_BF16=avx512) in the same rounds;
#   - ResNet50's 20 convolutions beside oneDNN (bench/dnnl_conv.c, built here with -ldnnl);
#   - SGEMM on ResNet50's shapes beside OpenBLAS (build/bench/bench_gemm).
# Needs `make`; peers when installed: python3-torch, libdnnl-dev, libopenblas-dev
# (scripts/install-deps.sh --bench). Usage: [ROUNDS=N] sh bench/run.sh [THREADS]
# The model rows and PyTorch's alternate for ROUNDS rounds (2): on a shared VM the speed drifts by
# 20-50 % over minutes, so each side's best round is compared, and each round's own ratio shown.
# PyTorch runs with glibc's malloc on transparent huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1),
# as pneumo's own large buffers are (nt_alloc): where THP is "madvise" (this VM) its allocator
# otherwise faults in every step's activations 4 KiB at a time (training 25 % slower here).
set -e
cd "$(dirname "$0")/.."
T=${1:-2}
P=build/pneumo
make -s all bench >/dev/null
ROUNDS=${ROUNDS:-2}
OUT=$(mktemp); GEMM=$(mktemp); CONV=$(mktemp); RD=$(mktemp -d)
trap 'rm -rf "$OUT" "$GEMM" "$CONV" "$RD"' EXIT
log() { echo "$@" | tee -a "$OUT"; }
HAVE_BF16=0
$P bench peak --threads "$T" | tee -a "$OUT"
PEAK=$(grep -m1 "op=peak.*threads=$T " "$OUT" | sed -n 's/.*gflops=\([0-9.]*\).*/\1/p')
if $P bench peak --dtype bf16 --threads "$T" >/dev/null 2>&1; then
    HAVE_BF16=1
    $P bench peak --dtype bf16 --threads "$T" | tee -a "$OUT"
    PEAKB=$(grep -m1 "op=peak dtype=bf16.*threads=$T " "$OUT" | sed -n 's/.*gflops=\([0-9.]*\).*/\1/p')
    PEAKB_UNIT=$(grep -m1 "op=peak dtype=bf16.*threads=$T " "$OUT" | sed -n 's/.*(measured \([A-Z0-9]*\) loop).*/\1/p')
    # The bf16 kernels' name in the lines (avx512bf16 or amx), so that AMX's rows and the same
    # machine's VDPBF16PS rows (NK_BF16=avx512) stay apart.
    BI=$(grep -m1 "op=peak dtype=bf16.*threads=$T " "$OUT" | sed -n 's/.* impl=\([a-z0-9]*\) .*/\1/p')
fi
HAVE_VDP=0
if [ "$BI" = amx ]; then
    HAVE_VDP=1
    NK_BF16=avx512 $P bench peak --dtype bf16 --threads "$T" | tee -a "$OUT"
    PEAKV=$(grep "op=peak dtype=bf16 impl=avx512bf16 threads=$T " "$OUT" | head -n 1 | sed -n 's/.*gflops=\([0-9.]*\).*/\1/p')
fi
M="$P bench model --threads $T"
have_torch=0
/usr/bin/python3 -c 'import torch' 2>/dev/null && have_torch=1
TP="env GLIBC_TUNABLES=glibc.malloc.hugetlb=1 /usr/bin/python3 bench/torch_resnet50.py --threads $T"
V=eager,channels_last,jit_frozen; VT=eager,channels_last
[ "$HAVE_BF16" = 1 ] && V=$V,bf16_autocast && VT=$VT,bf16_autocast
r=1
while [ "$r" -le "$ROUNDS" ]; do
    log "# round $r of $ROUNDS"
    {
        # The check against the reference kernels once, in the first round.
        if [ "$r" = 1 ]; then $M --batch 16 --peak "$PEAK"; else $M --batch 16 --no-check --peak "$PEAK"; fi
        $M --batch 1 --repeat 9 --no-check --peak "$PEAK"
        if [ "$HAVE_BF16" = 1 ]; then
            if [ "$r" = 1 ]; then $M --batch 16 --dtype bf16 --peak "$PEAKB"; else $M --batch 16 --no-check --dtype bf16 --peak "$PEAKB"; fi
            $M --batch 1 --repeat 9 --no-check --dtype bf16 --peak "$PEAKB"
        fi
        if [ "$HAVE_VDP" = 1 ]; then
            NK_BF16=avx512 $M --batch 16 --no-check --dtype bf16 --peak "$PEAKV"
            NK_BF16=avx512 $M --batch 1 --repeat 9 --no-check --dtype bf16 --peak "$PEAKV"
        fi
        $M --batch 16 --train --unfreeze 20 --no-check --repeat 3 --peak "$PEAK"
        $M --batch 16 --train --unfreeze all --no-check --repeat 3 --peak "$PEAK"
        if [ "$HAVE_BF16" = 1 ]; then
            $M --batch 16 --train --unfreeze 20 --dtype bf16 --no-check --repeat 3 --peak "$PEAKB"
            $M --batch 16 --train --unfreeze all --dtype bf16 --no-check --repeat 3 --peak "$PEAKB"
        fi
        if [ "$have_torch" = 1 ]; then
            $TP --batch 16 --variants "$V"
            $TP --batch 1 --repeat 9 --variants "$V"
            $TP --batch 16 --train last20 --repeat 3 --variants "$VT"
            $TP --batch 16 --train all --repeat 3 --variants "$VT"
        fi
    } | tee "$RD/$r" | tee -a "$OUT"
    r=$((r + 1))
done
[ "$have_torch" = 1 ] || log "PyTorch not installed (scripts/install-deps.sh --bench): no peer figures"
if [ "$T" -gt 1 ]; then # scaling: the same inference on one thread
    P1=$(grep -m1 "op=peak dtype=f32.*threads=1 " "$OUT" | sed -n 's/.*gflops=\([0-9.]*\).*/\1/p')
    $P bench model --threads 1 --batch 16 --repeat 3 --no-check --peak "$P1" | tee -a "$OUT"
    if [ "$HAVE_BF16" = 1 ]; then
        P1B=$(grep -m1 "op=peak dtype=bf16.*threads=1 " "$OUT" | sed -n 's/.*gflops=\([0-9.]*\).*/\1/p')
        $P bench model --threads 1 --batch 16 --repeat 3 --no-check --dtype bf16 --peak "$P1B" | tee -a "$OUT"
    fi
fi
# Convolutions beside oneDNN, same shapes, same threads, alternating for ROUNDS rounds (the
# tables take each side's fastest round per convolution).
have_dnnl=0
[ -f /usr/include/oneapi/dnnl/dnnl.h ] &&
    ${CC:-cc} -O2 -fopenmp bench/dnnl_conv.c -ldnnl -o build/bench/dnnl_conv 2>/dev/null && have_dnnl=1
r=1
while [ "$r" -le "$ROUNDS" ]; do
    $P bench conv --threads "$T" --peak "$PEAK" | tee -a "$CONV"
    [ "$HAVE_BF16" = 1 ] && $P bench conv --threads "$T" --dtype bf16 --peak "$PEAKB" | tee -a "$CONV"
    if [ "$have_dnnl" = 1 ]; then
        ./build/bench/dnnl_conv --threads "$T" | tee -a "$CONV"
        ./build/bench/dnnl_conv --threads "$T" --algo winograd | tee -a "$CONV"
        [ "$HAVE_BF16" = 1 ] && ./build/bench/dnnl_conv --threads "$T" --dtype bf16 | tee -a "$CONV"
    fi
    r=$((r + 1))
done
[ "$have_dnnl" = 1 ] || log "oneDNN not installed (libdnnl-dev): no convolution peer figures"
for pass in fwd-train bwd-data bwd-filter; do
    $P bench conv --threads "$T" --pass $pass --repeat 3 --peak "$PEAK" | tee -a "$CONV"
    [ "$HAVE_BF16" = 1 ] && $P bench conv --threads "$T" --pass $pass --repeat 3 --dtype bf16 --peak "$PEAKB" | tee -a "$CONV"
done
# GEMM beside OpenBLAS (when the bench was built with it), same process, same shapes.
./build/bench/bench_gemm | tee "$GEMM"
# The tables: pneumo beside the best peer variant for the same mode, dtype and batch.
val() { grep -E "$1" "${3:-$OUT}" | head -n 1 | sed -n "s/.* $2=\([0-9.]*\).*/\1/p"; }
# The largest value of a field over the matching lines (every round).
vmax() { grep -E "$1" "${3:-$OUT}" | sed -n "s/.* $2=\([0-9.]*\).*/\1/p" | sort -g | tail -n 1; }
best_torch() { grep -E "impl=pytorch.*batch=$1 .*mode=$2" "${4:-$OUT}" | grep -E "$3" | sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p' | sort -g | tail -n 1; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk "BEGIN{printf \"%.2fx\", $1/$2}" || echo "-"; }
row() { # label pneumo-pattern batch mode torch-filter: best round of each side, and each round's ratio
    p=$(vmax "$2" images_per_s); b=$(vmax "$2" best_images_per_s); pct=$(vmax "$2" pct_peak)
    t=$(best_torch "$3" "$4" "$5")
    rr=""; k=1
    while [ "$k" -le "$ROUNDS" ]; do
        rr="$rr${rr:+ / }$(ratio "$(val "$2" images_per_s "$RD/$k")" "$(best_torch "$3" "$4" "$5" "$RD/$k")")"
        k=$((k + 1))
    done
    echo "| $1 | ${p:--} | ${b:--} | ${pct:--} | ${t:--} | $(ratio "$p" "$t") | $rr |"
}
# convf NAME DTYPE IMPL FIELD [PASS] [SKIP]: the largest value of a field (GFLOP/s: the fastest
# round) over the conv lines that match and not SKIP (pneumo's carry pass=, oneDNN's are forward
# only).
convf() { grep -E "op=conv name=$1 (pass=${5:-fwd} )?dtype=$2 impl=$3" "$CONV" | grep -Ev "${6:-^$}" | sed -n "s/.* $4=\([0-9.]*\).*/\1/p" | sort -g | tail -n 1; }
# conv_names: "NAME COUNT" of each convolution pneumo's forward f32 ran, once each in the order
# run (every round printed them all).
conv_names() {
    grep -E "op=conv name=[^ ]* pass=fwd dtype=f32 impl=avx" "$CONV" | grep -v resnet50_all |
        sed -n 's/.*name=\([^ ]*\).* count=\([0-9]*\) .*/\1 \2/p' | awk '!seen[$1]++'
}
# conv_total DTYPE IMPL [PASS] [SKIP]: the network's sum of count x ms, each conv at its fastest
# matching line (of the rounds, and of oneDNN's algorithms unless SKIP, an ERE, drops lines).
conv_total() {
    grep -E "op=conv name=[^ ]* (pass=${3:-fwd} )?dtype=$1 impl=$2" "$CONV" | grep -Ev "resnet50_all${4:+|$4}" |
        sed -n 's/.*name=\([^ ]*\) .* count=\([0-9]*\) .* ms=\([0-9.]*\).*/\1 \2 \3/p' |
        awk '!($1 in m) {n++} !($1 in m) || $3 < m[$1] {m[$1] = $3; c[$1] = $2}
             END {for (k in m) s += c[k] * m[k]; if (n) printf "%.1f", s}'
}
{
    echo "## ResNet50 fp32 and bf16, $(date -u +%Y-%m-%d), $T threads"
    echo
    echo "Machine: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) CPUs; kernels $(grep -m1 -o 'impl=[a-z0-9+]*' "$OUT" | cut -d= -f2)."
    echo "Command: \`sh bench/run.sh $T\` (pneumo $(build/pneumo version | head -n 1 | cut -d' ' -f2), git $(git rev-parse --short HEAD 2>/dev/null || echo '?'))."
    echo "Peaks (measured register-only loops): fp32 FMA $(val 'op=peak dtype=f32.*threads='"$T" gflops) GFLOP/s; bf16 ${PEAKB_UNIT:-VDPBF16PS} ${PEAKB:-n/a} GFLOP/s. fp32 rows are % of the first, bf16 rows of the second."
    echo
    echo "Model rows: $ROUNDS rounds, pneumo's and PyTorch's runs alternating; each side's best round (its"
    echo "median step), and the ratio of each round on its own. PyTorch runs on transparent huge pages"
    echo "(GLIBC_TUNABLES=glibc.malloc.hugetlb=1), as pneumo's large buffers are."
    echo
    echo "| case | pneumo images/s (median) | best step | % of peak (median) | PyTorch images/s (best variant) | ratio | ratio by round |"
    echo "|---|---|---|---|---|---|---|"
    row "fp32 inference, batch 16" "mode=infer dtype=f32 .*batch=16 .*threads=$T " 16 infer "variant=(eager|channels_last|jit_frozen)"
    row "fp32 inference, batch 1" "mode=infer dtype=f32 .*batch=1 .*threads=$T " 1 infer "variant=(eager|channels_last|jit_frozen)"
    if [ "$HAVE_BF16" = 1 ]; then
        row "bf16 inference, batch 16" "mode=infer dtype=bf16 .*impl=[^ ]*$BI batch=16 .*threads=$T " 16 infer "variant=bf16_autocast"
        row "bf16 inference, batch 1" "mode=infer dtype=bf16 .*impl=[^ ]*$BI batch=1 .*threads=$T " 1 infer "variant=bf16_autocast"
    fi
    if [ "$HAVE_VDP" = 1 ]; then
        row "bf16 inference, batch 16, VDPBF16PS (NK_BF16=avx512; % of its peak, ${PEAKV:-?} GFLOP/s)" "mode=infer dtype=bf16 .*impl=[^ ]*avx512bf16 batch=16 .*threads=$T " 16 infer "variant=bf16_autocast"
        row "bf16 inference, batch 1, VDPBF16PS (NK_BF16=avx512)" "mode=infer dtype=bf16 .*impl=[^ ]*avx512bf16 batch=1 .*threads=$T " 1 infer "variant=bf16_autocast"
    fi
    row "fp32 training step, batch 16, last 20 layers + head" "mode=train dtype=f32 unfreeze=20 .*batch=16 " 16 train "variant=(eager|channels_last) .*unfreeze=last20"
    row "fp32 training step, batch 16, all layers" "mode=train dtype=f32 unfreeze=-1 .*batch=16 " 16 train "variant=(eager|channels_last) .*unfreeze=all"
    if [ "$HAVE_BF16" = 1 ]; then
        row "bf16 training step, batch 16, last 20 layers + head" "mode=train dtype=bf16 unfreeze=20 .*batch=16 " 16 train "variant=bf16_autocast .*unfreeze=last20"
        row "bf16 training step, batch 16, all layers" "mode=train dtype=bf16 unfreeze=-1 .*batch=16 " 16 train "variant=bf16_autocast .*unfreeze=all"
    fi
    if [ "$T" -gt 1 ]; then
        echo
        echo "Scaling, inference batch 16 (images/s, best step):"
        echo
        echo "| dtype | 1 thread | $T threads | speed-up |"
        echo "|---|---|---|---|"
        for dt in f32 bf16; do
            a=$(val "mode=infer dtype=$dt .*batch=16 .*threads=1 " best_images_per_s)
            b=$(vmax "mode=infer dtype=$dt .*impl=[^ ]*$BI batch=16 .*threads=$T " best_images_per_s)
            [ -n "$a$b" ] && echo "| $dt | ${a:--} | ${b:--} | $(ratio "$b" "$a") |"
        done
    fi
    echo
    echo "Operation counts are those of Keras's v1 network (stride on the 1x1 convolutions): 7.71"
    echo "GFLOP per 224x224 image forward, conv and dense multiply-adds x 2."
    echo
    echo "Convolutions at batch 16, $T threads, GFLOP/s (\`pneumo bench conv [--dtype bf16]\` beside"
    echo "\`build/bench/dnnl_conv\`: oneDNN $(grep -m1 -o 'impl=onednn-[0-9.]*' "$CONV" | cut -d- -f2), NHWC activations, weights in oneDNN's own layout;"
    echo "bf16: both sides read and write bf16 activations, as bf16 inference passes them (pneumo's conv1 reads the float32 image);"
    echo "oneDNN's f32 Winograd (\`--algo winograd\`, 3x3 only) in its own blocked activation layouts, the reorders untimed)."
    echo "pneumo's f32 3x3 rows are its Winograd F(4x4, 3x3) (algo=winograd); GFLOP/s count the direct"
    echo "convolution's multiply-adds for every algorithm. The f32 ratio is against oneDNN's faster algorithm:"
    echo
    echo "| conv | x per net | pneumo f32 | oneDNN f32 | oneDNN f32 Winograd | ratio | pneumo bf16 | oneDNN bf16 | ratio |"
    echo "|---|---|---|---|---|---|---|---|---|"
    conv_names | while read -r n c; do
        pf=$(convf "$n" f32 avx gflops); of=$(convf "$n" f32 onednn gflops fwd jit_wino)
        pb=$(convf "$n" bf16 "$BI" gflops); ob=$(convf "$n" bf16 onednn gflops)
        ow=$(convf "$n" f32 'onednn-[0-9.]*:jit_wino' gflops)
        obest=$(printf '%s\n%s\n' "$of" "$ow" | grep . | sort -g | tail -n 1)
        echo "| $n | ${c:-?} | ${pf:--} | ${of:--} | ${ow:--} | $(ratio "$pf" "$obest") | ${pb:--} | ${ob:--} | $(ratio "$pb" "$ob") |"
    done
    pt=$(conv_total f32 avx); ot=$(conv_total f32 onednn fwd jit_wino); pbt=$(conv_total bf16 "$BI"); obt=$(conv_total bf16 onednn)
    owt=$(conv_total f32 onednn)
    echo "| all convs of one forward (ms, lower is better) | | ${pt:--} | ${ot:--} | ${owt:--} (with Winograd) | $(ratio "$owt" "$pt") | ${pbt:--} | ${obt:--} | $(ratio "$obt" "$pbt") |"
    echo
    echo "Training's passes of the same convolutions, GFLOP/s (\`pneumo bench conv --pass"
    echo "fwd-train|bwd-data|bwd-filter [--dtype bf16]\`; no peer run here): fwd-train is the forward on"
    echo "weights as they are (any Winograd transform inside the call; bf16: on float32 activations in and"
    echo "out, which the backward reads, where fwd bf16 above runs on bf16 ones). Training with \`--dtype bf16\`"
    echo "uses the bf16 passes; conv1's input gradient is never needed in training."
    echo
    echo "| conv | x per net | fwd f32 | fwd-train f32 | bwd-data f32 | bwd-filter f32 | fwd bf16 | fwd-train bf16 | bwd-data bf16 | bwd-filter bf16 |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    conv_names | while read -r n c; do
        echo "| $n | ${c:-?} | $(convf "$n" f32 avx gflops) | $(convf "$n" f32 avx gflops fwd-train) | $(convf "$n" f32 avx gflops bwd-data) | $(convf "$n" f32 avx gflops bwd-filter) | $(convf "$n" bf16 "$BI" gflops) | $(convf "$n" bf16 "$BI" gflops fwd-train) | $(convf "$n" bf16 "$BI" gflops bwd-data) | $(convf "$n" bf16 "$BI" gflops bwd-filter) |"
    done
    echo "| all convs of the network (ms) | | $(conv_total f32 avx) | $(conv_total f32 avx fwd-train) | $(conv_total f32 avx bwd-data) | $(conv_total f32 avx bwd-filter) | $(conv_total bf16 "$BI") | $(conv_total bf16 "$BI" fwd-train) | $(conv_total bf16 "$BI" bwd-data) | $(conv_total bf16 "$BI" bwd-filter) |"
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
    echo "<details><summary>Raw output ($(cat "$OUT" "$CONV" "$GEMM" | wc -l) lines)</summary>"
    echo
    echo '```'
    cat "$OUT" "$CONV" "$GEMM"
    echo '```'
    echo
    echo "</details>"
    echo
} > bench/RESULTS.new.md
[ -f bench/RESULTS.md ] || printf '# Benchmark results\n\nNewest first. Each section is one run of the command it names.\n\n' > bench/RESULTS.md
# Only the newest section keeps its raw output; older ones point at the history (each section
# landed in its own commit, raw lines and all).
{ sed -n '1,4p' bench/RESULTS.md; cat bench/RESULTS.new.md; sed -n '5,$p' bench/RESULTS.md | sh bench/strip_raw.sh; } > bench/RESULTS.tmp
mv bench/RESULTS.tmp bench/RESULTS.md; rm -f bench/RESULTS.new.md
echo "bench/RESULTS.md updated"
