#!/bin/sh
# Command-line tests of `pneumo`: exit codes (0 ok, 1 failure, 2 usage), one-line messages that
# name the flag or file, and the main job (init -> info -> predict) on the shipped samples.
. tests/lib.sh
expect 2 "usage: pneumo" -- $P
expect 2 'unknown command "frobnicate"' -- $P frobnicate
expect 0 "pneumo [0-9]" -- $P version
expect 2 'unknown option "--bogus"' -- $P info --bogus x
expect 2 "expected one argument" -- $P info
expect 2 '--img-size expects an integer in 32..4096, got "abc"' -- $P init --out $T/m.st --img-size abc
expect 2 '--img-size expects an integer in 32..4096, got "10"' -- $P init --out $T/m.st --img-size 10
expect 2 '--dropout expects a number in \[0, 0.99\], got "1.5"' -- $P init --out $T/m.st --dropout 1.5
expect 2 "--out FILE is required" -- $P init
expect 2 '--preprocess.*expected rescale, caffe or torch, got "bgr"' -- $P init --out $T/m.st --preprocess bgr
expect 1 "No such file or directory" -- $P init --out $T/nodir/m.st
expect 0 "24,145,281 parameters" -- $P init --out $T/m.st --seed 3
expect 0 "Trainable params: 9,488,897 \(--unfreeze 20\)" -- $P info $T/m.st
expect 0 "Total params: 24,145,281" -- $P info $T/m.st --unfreeze all
expect 0 "Trainable params: 24,092,161" -- $P info $T/m.st --unfreeze all
expect 0 "Trainable params: 557,569" -- $P info $T/m.st --unfreeze 0
expect 0 "conv5_block3_out \(Activation\) +\(None, 7, 7, 2048\)" -- $P info $T/m.st
expect 0 '"total_params": 24145281' -- $P info $T/m.st --json
expect 2 "unfreeze: 200 layers asked for, but the backbone has 175" -- $P info $T/m.st --unfreeze 200
expect 2 '--unfreeze expects a layer count >= 0 or "all", got "-3"' -- $P info $T/m.st --unfreeze -3
# Damaged model files: a clear error naming the file, exit 1.
head -c 100000 $T/m.st > $T/trunc.st
expect 1 "trunc.st" -- $P info $T/trunc.st
: > $T/empty.st
expect 1 "empty.st" -- $P info $T/empty.st
expect 1 "No such file" -- $P info $T/missing.st
expect 0 "12,0[0-9][0-9],[0-9][0-9][0-9] parameters|parameters \(float16\)" -- $P init --out $T/h.st --fp16 --img-size 64
expect 0 "input 64x64x3" -- $P info $T/h.st
expect 0 "wrote .*float16, threshold 0.25" -- $P weights convert $T/m.st --out $T/m16.st --fp16 --threshold 0.25
expect 0 "threshold: 0.25" -- $P info $T/m16.st
expect 2 '--threshold expects a number in \[0, 1\], got "3"' -- $P weights convert $T/m.st --out $T/x.st --threshold 3
# predict: the main job on the shipped samples, then bad images among good ones.
expect 0 '"label":"(NORMAL|PNEUMONIA)"' -- $P predict --model $T/m.st --format jsonl data/samples/IM-0115-0001.jpeg data/samples/NORMAL2-IM-1438-0001.jpeg
printf 'not an image' > $T/bad.jpg
head -c 3000 data/samples/IM-0115-0001.jpeg > $T/cut.jpeg
expect 1 '"error":"image .*bad.jpg: expected a JPEG or PNG file' -- $P predict --model $T/m.st --format jsonl $T/bad.jpg data/samples/person1000_bacteria_2931.jpeg
expect 1 'person1000_bacteria_2931.jpeg","probability"' -- $P predict --model $T/m.st --format jsonl $T/bad.jpg data/samples/person1000_bacteria_2931.jpeg
expect 1 'cut.jpeg.*(corrupt|not a readable) JPEG' -- $P predict --model $T/m.st --format jsonl $T/cut.jpeg
expect 2 '--resize expects|resize: expected nearest, bilinear or area, got "cubic"' -- $P predict --model $T/m.st --resize cubic data/samples/IM-0115-0001.jpeg
expect 1 "weights import.*missing.h5" -- $P weights import $T/missing.h5 --out $T/w.st
# Keras .h5 import through the command, on the small files of the real layout (channels / 16).
expect 0 "imported .* tensors .*current layer names" -- $P weights import tests/fixtures/keras_resnet50_w16_current.h5 --width-div 16 --out $T/w.st
expect 0 "Preprocess: caffe" -- $P info $T/w.st
expect 0 "imported .* tensors .*2017" -- $P weights import tests/fixtures/keras_resnet50_w16_2017.h5 --width-div 16 --out $T/w17.st
expect 1 "shape" -- $P weights import tests/fixtures/keras_resnet50_w16_current.h5 --width-div 8 --out $T/w8.st
expect 0 '"probability"' -- $P predict --model $T/w.st --format jsonl data/samples/IM-0115-0001.jpeg
expect 0 '1 done \(0 cached\), 0 failed in [0-9.]+ s \([0-9.]+ images/s; model [0-9.]+ s, waiting for input [0-9.]+ s\)' -- $P predict --model $T/w.st --format jsonl data/samples/IM-0115-0001.jpeg
expect 2 "expected peak, gemm, conv, model or data" -- $P bench nothing
expect 2 '--shape expects a name that bench conv prints .*got "conv9"' -- $P bench conv --shape conv9
# --shape: that one convolution (checked against its reference first), no network total.
expect 0 'op=conv name=conv2_1x1_64_64 pass=bwd-filter dtype=f32 .*gflops=' -- $P bench conv --shape conv2_1x1_64_64 --pass bwd-filter --batch 1 --repeat 1 --peak 100
$P bench conv --shape conv3_3x3 --batch 1 --repeat 1 --peak 100 > $T/conv1.txt 2>&1
[ "$(grep -c '^op=conv ' $T/conv1.txt)" = 1 ] && grep -q "name=conv3_3x3 " $T/conv1.txt &&
    ok "bench conv --shape conv3_3x3 times that shape only" || bad "bench conv --shape: $(cat $T/conv1.txt)"
# Winograd: the 3x3 runs it where the CPU has AVX2 and FMA or AVX-512 (and says so), --conv-algo
# gemm and PNEUMO_CONV=gemm turn it off; bad names are usage errors.
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
    expect 0 'name=conv3_3x3 .* algo=winograd' -- $P bench conv --shape conv3_3x3 --batch 1 --repeat 1 --peak 100
    expect 0 'name=conv3_3x3 .* algo=winograd' -- $P bench conv --shape conv3_3x3 --pass bwd-data --batch 1 --repeat 1 --peak 100
    expect 0 'name=conv3_3x3 .* algo=winograd' -- $P bench conv --shape conv3_3x3 --pass bwd-filter --batch 1 --repeat 1 --peak 100
    # --img-size 128: conv5's 3x3 is 4x4, one tile an image; the packed forward runs Winograd
    # from 4 tiles in the batch, the passes on weights transformed per call from 48.
    expect 0 'name=conv5_3x3 .* N=4 H=4 .* algo=winograd' -- $P bench conv --shape conv5_3x3 --img-size 128 --batch 4 --repeat 1 --peak 100
    expect 0 'name=conv5_3x3 .* N=1 H=4 .* algo=gemm' -- $P bench conv --shape conv5_3x3 --img-size 128 --batch 1 --repeat 1 --peak 100
    expect 0 'name=conv5_3x3 .* N=2 H=4 .* algo=gemm' -- $P bench conv --shape conv5_3x3 --img-size 128 --pass bwd-filter --batch 2 --repeat 1 --peak 100
fi
expect 0 'name=conv1_7x7s2 .* H=134 ' -- $P bench conv --shape conv1_7x7s2 --img-size 128 --batch 1 --repeat 1 --peak 100
expect 0 'name=conv3_3x3 .* algo=gemm' -- $P bench conv --shape conv3_3x3 --conv-algo gemm --batch 1 --repeat 1 --peak 100
expect 0 'name=conv2_1x1_64_64 .* algo=gemm' -- $P bench conv --shape conv2_1x1_64_64 --batch 1 --repeat 1 --peak 100
expect 2 '--conv-algo expects auto or gemm, got "fft"' -- $P bench conv --conv-algo fft
# --conv H,C,K,R[,S[,P]]: one shape of the caller's (named after its numbers, --img-size ignored),
# checked against its reference like the table's; bad or oversized shapes are usage errors.
expect 0 'op=conv name=conv_h9_c16_k24_r3_s1_p1 pass=fwd dtype=f32 .* N=2 H=9 C=16 K=24 R=3 stride=1 count=1 .*gflops=' -- $P bench conv --conv 9,16,24,3,1,1 --batch 2 --img-size 64 --repeat 1 --peak 100
expect 0 'name=conv_h11_c5_k7_r5_s2_p2 pass=bwd-data .* H=11 C=5 K=7 R=5 stride=2 .*gflops=' -- $P bench conv --conv 11,5,7,5,2,2 --pass bwd-data --batch 2 --repeat 1 --peak 100
expect 0 'name=conv_h8_c32_k40_r1_s1_p0 pass=bwd-filter .*gflops=' -- $P bench conv --conv 8,32,40,1 --pass bwd-filter --batch 3 --repeat 1 --peak 100
$P bench conv --conv 9,16,24,3,1,1 --batch 2 --repeat 1 --peak 100 > $T/own.txt 2>&1
[ "$(grep -c '^op=conv ' $T/own.txt)" = 1 ] && ok "bench conv --conv times that shape only (no network total)" ||
    bad "bench conv --conv: $(cat $T/own.txt)"
expect 2 '--conv expects H,C,K,R\[,STRIDE\[,PAD\]\].*got "5,8,8,9"' -- $P bench conv --conv 5,8,8,9
expect 2 '--conv expects .*got "56,64,64"' -- $P bench conv --conv 56,64,64
expect 2 '--conv expects .*got "56,64,64,3,1,3"' -- $P bench conv --conv 56,64,64,3,1,3
expect 2 '--conv and --shape: expected one of them, got both' -- $P bench conv --conv 5,8,8,1 --shape conv2_3x3
expect 2 '--conv 1024,64,64,3,1,1 at --batch 64: expected tensors of at most 2\^31-1 values' -- $P bench conv --conv 1024,64,64,3,1,1 --batch 64
# --dtype bf16: bf16 activations in and out (conv1's image stays float32), each shape checked
# against the bf16 reference before it is timed (a failed check prints FAIL and exits 1); on
# AVX512_BF16, or on AMX tiles where the CPU has them.
if grep -qw avx512_bf16 /proc/cpuinfo; then
    for s in conv1_7x7s2 conv2_1x1_reduce conv3_1x1s2_proj conv4_3x3; do
        expect 0 "name=$s pass=fwd dtype=bf16 impl=(avx512bf16|amx) .*gflops=" -- $P bench conv --dtype bf16 --shape $s --img-size 64 --batch 2 --repeat 1 --peak 100
    done
    expect 0 'name=conv_h9_c16_k24_r3_s1_p1 pass=fwd dtype=bf16 .*gflops=' -- $P bench conv --dtype bf16 --conv 9,16,24,3,1,1 --batch 2 --repeat 1 --peak 100
    expect 0 'name=conv2_1x1_reduce pass=fwd-train dtype=bf16 .*gflops=' -- $P bench conv --dtype bf16 --pass fwd-train --shape conv2_1x1_reduce --img-size 64 --batch 2 --repeat 1 --peak 100
fi
# bench/ab.sh: two builds alternating (here the same one twice), per case both sides' ms and the
# ratio of the medians.
expect 0 '^  B/A [0-9.]+ \(medians [0-9.]+ / [0-9.]+\), B faster in [0-2] of 2 rounds$' -- sh bench/ab.sh -r 2 $P $P -- conv --shape conv2_1x1_64_64 --pass bwd-data --batch 1 --repeat 1 --no-check
expect 2 'usage: sh bench/ab.sh' -- sh bench/ab.sh $P $P conv
expect 2 'expected an executable pneumo, got "nope"' -- sh bench/ab.sh $P nope -- conv
# bench/strip_raw.sh: older RESULTS sections lose their raw output blocks (both forms), nothing else.
printf '## A\nx\nRaw output:\n\n```\nop=1\n```\n\n## B\n<details><summary>Raw output (1 lines)</summary>\n\n```\nop=2\n```\n\n</details>\ny\n' | sh bench/strip_raw.sh > $T/strip.txt
n=$((n+1))
if [ "$(grep -c '^Raw output: in the git history' $T/strip.txt)" = 2 ] && ! grep -q 'op=' $T/strip.txt &&
    [ "$(grep -c '^[xy]$\|^## [AB]$' $T/strip.txt)" = 4 ]; then
    echo "ok   bench/strip_raw.sh"
else
    fails=$((fails+1)); echo "FAIL: bench/strip_raw.sh:"; sed 's/^/    /' $T/strip.txt
fi
# bench model --profile: each slow layer's forward and backward ms and its GFLOP/s, whose flop
# count is checked here: conv2's 3x3 (64 -> 64, 16x16 at 64 px) runs forward, input and weight
# gradients, 3 x 2*2*16*16*64*576 flops; conv1 (first trainable: no input gradient) 2 x
# 2*2*32*32*64*147.
$P bench model --train --unfreeze all --img-size 64 --batch 2 --repeat 1 --profile --top 200 --no-check --peak 100 > $T/prof.txt 2>&1
n=$((n+1))
if awk '$1 == "conv2_block1_2_conv" { f = $6 * $3 * 1e6; if (f > 0.95 * 113246208 && f < 1.05 * 113246208 && $5 > 0) ok2 = 1 }
        $1 == "conv1_conv" { f = $6 * $3 * 1e6; if (f > 0.95 * 77070336 && f < 1.05 * 77070336) ok1 = 1 }
        END { exit !(ok1 && ok2) }' $T/prof.txt; then
    echo "ok   bench model --profile: per-layer forward/backward ms and GFLOP/s"
else
    fails=$((fails+1)); echo "FAIL: bench model --profile per-layer columns:"; grep -E "slowest|conv2_block1_2_conv|conv1_conv " $T/prof.txt | sed 's/^/    /'
fi
expect 1 'PNEUMO_CONV must be auto or gemm, got "fft"' -- env PNEUMO_CONV=fft $P predict --format jsonl data/samples/IM-0115-0001.jpeg
expect 0 '"probability"' -- env PNEUMO_CONV=gemm $P predict --format jsonl data/samples/IM-0115-0001.jpeg
# --dtype: a bad name is a usage error; bf16 (where the CPU has AVX512_BF16) stays near f32.
for c in predict worker serve eval train; do expect 2 "dtype expects f32 or bf16" -- $P $c --dtype bf17; done
if grep -qw avx512_bf16 /proc/cpuinfo && [ -f weights/pneumo-resnet50.safetensors ]; then
    $P predict --format jsonl data/samples/*.jpeg > $T/f32.jsonl 2> /dev/null
    $P predict --dtype bf16 --format jsonl data/samples/*.jpeg > $T/bf16.jsonl 2> /dev/null
    grep -o '"probability":[0-9.e-]*' $T/f32.jsonl | cut -d: -f2 > $T/p32
    grep -o '"probability":[0-9.e-]*' $T/bf16.jsonl | cut -d: -f2 > $T/p16
    d=$(paste -d' ' $T/p32 $T/p16 | awk '{d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d; n++} END {print (n == 3) ? m + 0 : "none"}')
    [ "$d" != none ] && awk "BEGIN {exit !($d < 0.05)}" && ok "predict --dtype bf16 within 0.05 of f32 (max |dp| $d)" || bad "bf16 vs f32: $d"
else
    echo "SKIP part: --dtype bf16 (no avx512_bf16 on this CPU, or no shipped model)"
fi
finish cli.sh
