#!/bin/sh
# Batch prediction from the local S3 server against the model's pure compute rate, same run:
# starts @20minutes/s3rver on loopback (tests/lib.sh), uploads N images of the shared train set
# with awscli, runs `pneumo predict s3://...` (no Redis) and `pneumo bench model` at the same image
# size and batch, interleaved three times, with the S3 server's CPU time per image (it shares
# the cores) and the ratio bound that sets. Usage: sh bench/predict_s3.sh [N] [MODEL]
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
# Interleaved, 3 rounds: predict from S3 (its own summary's rate: from the first read to the last
# record, so model loading is left out) and pure compute at the same size and batch. Best of each.
bp=0; bm=0
for round in 1 2 3; do
    c0=$(awk '{print $14 + $15}' /proc/$spid/stat)
    $P predict --model $MODEL --batch 8 --format jsonl s3://benchb/set/ > $T/out.jsonl 2> $T/err.txt || { tail -n 3 $T/err.txt; exit 1; }
    c1=$(awk '{print $14 + $15}' /proc/$spid/stat)
    done_n=$(grep -c '"probability"' $T/out.jsonl)
    rate=$(sed -n 's/.*(\([0-9.]*\) images\/s.*/\1/p' $T/err.txt | tail -n 1)
    split=$(sed -n 's/.*images\/s; model \([0-9.]*\) s, waiting for input \([0-9.]*\) s).*/model_s=\1 wait_s=\2/p' $T/err.txt | tail -n 1)
    # The S3 server's CPU time (user + system, clock ticks) while it served the run: on this
    # machine it shares the cores with the model.
    s3ms=$(echo "$c0 $c1 $done_n $(getconf CLK_TCK)" | awk '{printf "%.2f", ($2 - $1) * 1000 / $4 / $3}')
    echo "op=predict source=s3 round=$round images=$done_n img=$IMG batch=8 images_per_s=$rate $split s3_server_cpu_ms_per_image=$s3ms"
    $P bench model --img-size $IMG --batch 8 --repeat 5 --no-check > $T/model.txt 2>&1
    m=$(sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p' $T/model.txt | tail -n 1)
    echo "op=model round=$round img=$IMG batch=8 images_per_s=$m"
    s3sum=$(echo "${s3sum:-0} $s3ms" | awk '{print $1 + $2}')
    bp=$(echo "$bp $rate" | awk '{print ($2 > $1) ? $2 : $1}')
    bm=$(echo "$bm $m" | awk '{print ($2 > $1) ? $2 : $1}')
done
echo "best: predict_from_s3=$bp pure_compute=$bm ratio=$(echo "$bp $bm" | awk '{printf "%.2f", $1 / $2}')"
# What the S3 server alone takes of this machine at the pure compute rate: the ratio cannot
# exceed 1 minus that share while the server runs on the cores the model computes on.
echo "$s3sum $bm $(nproc)" | awk '{s = $1 / 3 * $2 / 1000 / $3; printf "s3_server: %.2f ms CPU an image, %.1f %% of %d cores at %.1f images/s: ratio bound %.2f\n", $1 / 3, 100 * s, $3, $2, 1 - s}'
s3_stop
