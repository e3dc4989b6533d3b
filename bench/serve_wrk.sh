#!/bin/sh
# serve_wrk.sh: load test of the whole stack: wrk through nginx (TLS) to `pneumo serve` with the
# shipped model, POSTing real X-rays (bench/serve_wrk.lua), beside `pneumo predict`'s batch
# throughput on the same images. Not part of `make test`. Usage:
#   sh bench/serve_wrk.sh [SECONDS (30)] [--no-results]
# Runs: 8 and 32 connections with distinct images (every request a new image: inference, not
# the cache), then 32 connections re-sending one image (cache hits: nginx + serve + Redis only).
# Brings up its own stack in a temporary folder on free ports, with the /api rate limit raised
# out of the way; appends or replaces the section in bench/RESULTS.md.
. tests/lib.sh
DUR=${1:-30}
LOAD=$(cut -d' ' -f1 /proc/loadavg)   # the machine may be shared: recorded with the results
stack_need wrk
SRC=../shared/data/chest_xray/train
[ -d $SRC ] || { echo "needs the training images in $SRC"; exit 1; }
export PNEUMO_API_RATE=100000r/s PNEUMO_API_BURST=100000
trap 'stack_down; rm -rf "$T"' EXIT
stack_up || exit 1
echo "stack up at $URL"
# 224 px JPEGs of the train set, sorted; disjoint slices per run so nothing is a cache hit.
find $SRC -name '*.jpeg' | sort > $T/all
sed -n '1,2000p' $T/all > $T/list8
sed -n '2001,4000p' $T/all > $T/list32
head -n 1 $T/all > $T/list1; head -n 1 $T/all >> $T/list1   # one image for each wrk thread
head -n 256 $T/list8 > $T/listp   # predict's share: the first images the 8-connection run sent

# The same images through `pneumo predict` (files, batch 8, all CPUs, no Redis), before and
# after the wrk runs: the machine may be shared, and two figures show how much that moved.
predict_rate() {
    $P predict --batch 8 --format jsonl - < $T/listp > $T/pred.jsonl 2> $T/pred.err || { cat $T/pred.err; exit 1; }
    sed -n 's/.*(\([0-9.]*\) images\/s.*/\1/p' $T/pred.err | tail -n 1
}
# metric NAME: the value of a counter in serve's /metrics (through nginx, from loopback).
metric() { curl -sS --cacert $CA $URL/metrics | awk -v m="$1" '$1 == m { print $2 }'; }
run() {   # CONNECTIONS SECONDS LIST: wrk's RESULT line plus serve's batches and model time
    b0=$(metric pneumo_inference_batch_size_sum); n0=$(metric pneumo_inference_batch_size_count)
    s0=$(metric pneumo_inference_seconds_sum)
    wrk -t2 -c$1 -d$2s --timeout 60s -s bench/serve_wrk.lua "$URL/api/v1/predictions" -- $3 "$TOKEN" 2 > $T/wrk.out 2>&1
    r=$(grep '^RESULT' $T/wrk.out) || { cat $T/wrk.out; exit 1; }
    b1=$(metric pneumo_inference_batch_size_sum); n1=$(metric pneumo_inference_batch_size_count)
    s1=$(metric pneumo_inference_seconds_sum)
    echo "$r $(python3 -c "import sys; b0, b1, n0, n1, s0, s1, d = map(float, sys.argv[1:])
print('batch_mean=%.1f model_busy=%.2f' % ((b1 - b0) / max(n1 - n0, 1), (s1 - s0) / d))" \
        "${b0:-0}" "${b1:-0}" "${n0:-0}" "${n1:-0}" "${s0:-0}" "${s1:-0}" $2)"
}
pred1=$(predict_rate); echo "pneumo predict before: $pred1 images/s"
r8=$(run 8 $DUR $T/list8); echo "c=8  distinct: $r8"
r32=$(run 32 $DUR $T/list32); echo "c=32 distinct: $r32"
curl -sS --cacert $CA -H "Authorization: Bearer $TOKEN" -F "image=@$(head -n 1 $T/all);type=image/jpeg" -o /dev/null $URL/api/v1/predictions   # stored first
rc=$(run 32 $(( DUR < 10 ? DUR : 10 )) $T/list1); echo "c=32 cached:   $rc"
stack_down
pred2=$(predict_rate); echo "pneumo predict after:  $pred2 images/s"
pred=$(python3 -c "print(max($pred1, $pred2))")   # the less disturbed of the two

[ "${2:-}" = --no-results ] && exit 0
CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
DATE=$(date -u +%Y-%m-%d)
python3 - "$DATE" "$CPU" "$(nproc)" "$DUR" "$pred" "$LOAD" "$pred1" "$pred2" "$r8" "$r32" "$rc" <<'PY'
import re, sys
date, cpu, ncpu, dur, pred, load, pred1, pred2, *runs = sys.argv[1:]
def kv(s): return dict(x.split('=') for x in s.split()[1:])
r8, r32, rc = map(kv, runs)
def row(name, r):
    errs = int(r['non200']) + int(r['socket_errors']) + int(r['timeouts'])
    return (f"| {name} | {float(r['rps']):.1f} | {r['p50_ms']} | {r['p99_ms']} | {r['requests']} | "
            + (f"{errs} | {r['cached']} | {r['batch_mean']} | {min(float(r['model_busy']), 1):.0%} |"
             if float(r['batch_mean']) > 0 else f"{errs} | {r['cached']} | - | 0% |"))
import textwrap
fill = lambda t: textwrap.fill(' '.join(t.split()), 100)
intro = fill(f"""Machine: {cpu}, {ncpu} vCPUs (load average {load} before the run); wrk, nginx, `pneumo serve`
(shipped model, default `--max-batch 8`) and Redis all on the same cores. Command: `sh
bench/serve_wrk.sh {dur}` (wrk -t2, HTTPS through nginx, multipart uploads of the 224 px train
JPEGs, bench/serve_wrk.lua; {dur} s per run). "distinct" sends every request a different image
(so each is a real inference with its Grad-CAM map; the heat-map PNG is drawn only when fetched,
which this load does not do); "cached" re-sends one image (answered from
serve's cache, without the model: nginx + serve only). Errors: non-200 answers plus socket errors
and timeouts. "mean batch" and "model busy" come from serve's /metrics: images per forward pass,
and the share of the run the inference thread spent in the model (forward and Grad-CAM).""")
outro = fill(f"""`pneumo predict --batch 8` over 256 of the same images (files, no Redis; the rate of its
own summary line), run before and after the wrk runs: {pred1} and {pred2} images/s (a large gap means other work
shared the machine; the ratios use the better figure, {pred});
serve through nginx at 8 connections reaches
{float(r8['rps']) / float(pred):.2f}x that, at 32 connections {float(r32['rps']) / float(pred):.2f}x.""")
sec = f"""## pneumo serve through nginx (wrk), {date}

{intro}

| run | requests/s | p50 ms | p99 ms | requests | errors | cached answers | mean batch | model busy |
|---|---|---|---|---|---|---|---|---|
{row('8 connections, distinct', r8)}
{row('32 connections, distinct', r32)}
{row('32 connections, cached', rc)}

{outro}
"""
path = 'bench/RESULTS.md'
text = open(path).read()
text = re.sub(r'## pneumo serve through nginx \(wrk\).*?(?=\n## |\Z)', '', text, flags=re.S)
i = text.index('\n## ') + 1
open(path, 'w').write(text[:i].rstrip('\n') + '\n\n' + sec + '\n' + text[i:].lstrip('\n'))
print('bench/RESULTS.md updated')
PY
