#!/bin/sh
# `pneumo train` end to end on a small data set (the shipped samples, copied under patient-like
# names) with a narrow network (--width-div 16, 64 px): outputs and Keras's CSV columns, the
# TensorBoard file read back by an independent parser, bit-exact --resume after an interrupt,
# frozen weights left bit-identical, a full disk leaving the previous checkpoint intact, and
# clear errors for bad flags and bad data.
. tests/lib.sh
# 24 images per class: the three samples under distinct patient names.
D=$T/data
mkdir -p $D/NORMAL $D/PNEUMONIA
i=0
for k in 1 2 3 4 5 6 7 8; do
    for s in data/samples/*.jpeg; do
        i=$((i+1))
        cp "$s" $D/NORMAL/IM-$((1000+i))-0001.jpeg
        cp "$s" $D/PNEUMONIA/person$((100+i))_bacteria_$i.jpeg
    done
done
ARGS="--data $D --img-size 64 --width-div 16 --batch 8 --epochs 3 --seed 1 --threads 2 \
--early-stopping-patience 2 --reduce-lr-patience 1 --restore-best-weights --horizontal-flip \
--rotation-range 10 --val-split 0.25"

expect 0 "best val_loss" -- $P train $ARGS --out $T/a
# Not on a terminal: plain progress lines (here after every step; every 60 s by default).
expect 0 "^epoch 1/1 step 1/[0-9]+ - [0-9]+s - ETA [0-9]+:[0-9]{2} - loss [0-9.]+ - accuracy [0-9.]+ - [0-9.]+ img/s" -- env PNEUMO_PROGRESS_LOG_S=0 $P train $ARGS --epochs 1 --out $T/p
for f in best.safetensors last.ckpt.safetensors log.csv command.json; do
    [ -f $T/a/$f ] && ok "run folder has $f" || bad "run folder lacks $f"
done
head -n 1 $T/a/log.csv | grep -qx "epoch,accuracy,auc,learning_rate,loss,precision,recall,val_accuracy,val_auc,val_loss,val_precision,val_recall" \
    && ok "CSVLogger columns" || bad "CSV header: $(head -n 1 $T/a/log.csv)"
[ "$(wc -l < $T/a/log.csv)" -eq 4 ] && ok "3 epoch rows" || bad "log.csv has $(wc -l < $T/a/log.csv) lines"
if command -v python3 >/dev/null; then
    ev=$(ls $T/a/events.out.tfevents.*)
    python3 tests/tb_check.py "$ev" > $T/tb.txt 2>&1 && grep -q "^2 val_loss " $T/tb.txt \
        && ok "TensorBoard file parses, val_loss at epoch 2" || bad "tb_check: $(tail -n 2 $T/tb.txt)"
    # Interrupted after step 13 (mid epoch 3) and resumed: bit-identical to the uninterrupted run.
    PNEUMO_STOP_AFTER_STEPS=13 $P train $ARGS --out $T/b > $T/b.txt 2>&1; rc=$?
    [ $rc -eq 130 ] && grep -qE "interrupted at epoch [0-9]+ step [0-9]+" $T/b.txt && ok "interrupt exits 130" \
        || bad "interrupt: exit $rc, $(tail -n 1 $T/b.txt)"
    expect 0 "resuming .* at epoch [0-9]+, step [1-9]" -- $P train --resume $T/b
    python3 tests/st_diff.py $T/a/last.ckpt.safetensors $T/b/last.ckpt.safetensors > $T/d.txt \
        && ok "resume is bit-exact (weights, optimizer, BN statistics)" || bad "resume differs: $(head -n 3 $T/d.txt)"
    cmp -s $T/a/log.csv $T/b/log.csv && ok "resumed log.csv identical" || bad "log.csv differs"
    # --unfreeze 0: only the head moves; every backbone tensor (BN statistics too) is unchanged.
    $P init --out $T/init.st --img-size 64 --width-div 16 --seed 5 > /dev/null
    expect 0 "trainable: 3 layers" -- $P train --data $D --weights $T/init.st --unfreeze 0 --epochs 1 --batch 8 --val-split 0.25 --out $T/c
    python3 tests/st_diff.py $T/init.st $T/c/best.safetensors --skip dense > $T/f.txt \
        && ok "frozen backbone bit-identical" || bad "frozen weights moved: $(head -n 3 $T/f.txt)"
    python3 tests/st_diff.py $T/init.st $T/c/best.safetensors > /dev/null \
        && bad "the head did not train" || ok "the head trained"
else
    echo "SKIP part: no python3 for the safetensors/TensorBoard parsers"
fi
# A real Ctrl-C (SIGINT) in the middle of a long run: the step finishes, the checkpoint is saved,
# exit 130, and the run resumes from it.
$P train $ARGS --epochs 400 --early-stopping-patience 0 --out $T/sig > $T/sig.txt 2>&1 &
tp=$!
sleep 1.5
kill -INT $tp; wait $tp; rc=$?
[ $rc -eq 130 ] && grep -qE "interrupted at epoch [0-9]+ step" $T/sig.txt && [ -f $T/sig/last.ckpt.safetensors ] \
    && ok "SIGINT saves and exits 130" || bad "SIGINT: exit $rc, $(tail -n 1 $T/sig.txt)"
expect 0 "resuming .* at epoch" -- $P train --resume $T/sig --epochs 2

# A full disk at checkpoint time: a clear error, and the previous checkpoint survives.
cp $T/a/last.ckpt.safetensors $T/prev.st
ln -s /dev/full $T/a/last.ckpt.safetensors.tmp
expect 1 "No space left" -- $P train --resume $T/a --epochs 4
cmp -s $T/a/last.ckpt.safetensors $T/prev.st && ok "previous checkpoint intact" || bad "checkpoint changed"
rm -f $T/a/last.ckpt.safetensors.tmp
# Bad input.
# bf16 training (where the CPU has AVX512_BF16): runs, learns (finite losses), and the stored
# command line keeps --dtype for --resume.
if grep -qw avx512_bf16 /proc/cpuinfo; then
    expect 0 "best val_loss" -- $P train $ARGS --epochs 2 --dtype bf16 --unfreeze all --out $T/b16
    awk -F, 'NR > 1 && ($5 + 0 != $5 || $5 == "nan" || $5 == "inf") {bad = 1} END {exit bad || NR != 3}' $T/b16/log.csv \
        && ok "bf16 training: 2 epochs of finite losses" || bad "bf16 log.csv: $(cat $T/b16/log.csv)"
    grep -q '"--dtype","bf16"' $T/b16/command.json && ok "command.json keeps --dtype bf16" \
        || bad "command.json: $(cat $T/b16/command.json)"
else
    echo "SKIP part: train --dtype bf16 (no avx512_bf16 on this CPU)"
fi
expect 2 '--data DIR\|s3://bucket/prefix/ is required' -- $P train --epochs 1
expect 2 '--epochs expects an integer in 1..100000, got "0"' -- $P train --data $D --epochs 0
expect 2 "give --val or --val-split, not both" -- $P train --data $D --val $D --val-split 0.2
expect 2 '--optimizer expects adam or sgd, got "rmsprop"' -- $P train --data $D --optimizer rmsprop
expect 2 '--class-weight expects balanced, none or 0:W0,1:W1, got "heavy"' -- $P train --data $D --class-weight heavy --img-size 64 --width-div 16 --val-split 0.25 --out $T/x
expect 2 '--monitor expects' -- $P train --data $D --monitor val_f2
expect 1 "missing" -- $P train --data $T/missing --out $T/y
mkdir -p $T/empty/NORMAL $T/empty/PNEUMONIA
expect 1 "empty|no images" -- $P train --data $T/empty --out $T/z
expect 1 "no stored command|last.ckpt" -- $P train --resume $T/nothing
finish train.sh
