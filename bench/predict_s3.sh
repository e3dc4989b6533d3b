#!/bin/sh
# Batch prediction from the local S3 server against the model's pure compute rate, same run:
# starts @20minutes/s3rver on loopback (tests/lib.sh), uploads N images of the shared train set
# with awscli, times `pneumo predict s3://...` (no Redis, JSON lines to /dev/null), and times
# `pneumo bench model` at the same image size and batch. Usage: sh bench/predict_s3.sh [N] [MODEL]
N=${1:-256}
MODEL=${2:-weights/pneumo-resnet50.safetensors}
. tests/lib.sh
SRC=../shared/data/chest_xray/train
[ -d $SRC ] || { echo "needs $SRC"; exit 1; }
mkdir -p $T/set/NORMAL $T/set/PNEUMONIA
ls $SRC/NORMAL | head -n $((N / 2)) | while read f; do cp $SRC/NORMAL/$f $T/set/NORMAL/; done
ls $SRC/PNEUMONIA | head -n $((N / 2)) | while read f; do cp $SRC/PNEUMONIA/$f $T/set/PNEUMONIA/; done
s3_start benchb && s3_seed $T/set s3://benchb/set/ || exit 1
IMG=$($P info $MODEL --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["input_shape"][1])')
t0=$(date +%s.%N)
$P predict --model $MODEL --batch 8 --format jsonl s3://benchb/set/ > $T/out.jsonl 2> $T/err.txt || { tail -n 3 $T/err.txt; exit 1; }
t1=$(date +%s.%N)
done_n=$(grep -c '"probability"' $T/out.jsonl)
rate=$(echo "$done_n $t0 $t1" | awk '{printf "%.2f", $1 / ($3 - $2)}')
echo "op=predict source=s3 images=$done_n img=$IMG batch=8 images_per_s=$rate (includes loading the model)"
$P bench model --img-size $IMG --batch 8 --repeat 5 --no-check | tee $T/model.txt
m=$(sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p' $T/model.txt | tail -n 1)
echo "ratio predict_from_s3 / pure_compute = $(echo "$rate $m" | awk '{printf "%.2f", $1 / $2}')"
s3_stop
