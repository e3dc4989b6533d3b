#!/bin/sh
# `pneumo predict` end to end against a real redis-server on a loopback port (and the local S3
# server of tests/s3.sh when node, s3rver and awscli are here): records on stdout and in Redis,
# failures recorded, the cache (a re-run is all hits, --force recomputes, another model never
# hits), CSV, stdin lists, folder recursion, Redis unreachable at start, Redis killed mid-run
# and --replay, bad flags. Small models (64 px, --width-div 16) except one shipped-model run.
. tests/lib.sh
if ! command -v redis-server > /dev/null || ! command -v redis-cli > /dev/null; then
    echo "SKIP redis-server / redis-cli not installed (./scripts/install-deps.sh)"
    exit 77
fi
rpid=
trap '[ -n "$spid" ] && kill $spid 2>/dev/null; [ -n "$rpid" ] && kill $rpid 2>/dev/null; rm -rf "$T"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
start_redis() {
    redis-server --port $PORT --bind 127.0.0.1 --save '' --appendonly no > $T/redis.log 2>&1 &
    rpid=$!
    i=0
    until redis-cli -p $PORT ping > /dev/null 2>&1; do
        i=$((i+1)); [ $i -gt 100 ] && { echo "redis-server did not start: $(tail -n 3 $T/redis.log)"; exit 1; }
        sleep 0.05
    done
}
stop_redis() { kill $rpid 2> /dev/null; wait $rpid 2> /dev/null; rpid=; }
start_redis
R="redis-cli -p $PORT -n 3"
URL=redis://127.0.0.1:$PORT/3
unset REDIS_URL

M=$T/m.st; M2=$T/m2.st
$P init --out $M --img-size 64 --width-div 16 --seed 1 > /dev/null || bad "init"
$P init --out $M2 --img-size 64 --width-div 16 --seed 2 > /dev/null || bad "init 2"
MID=$(sha256sum $M | cut -c1-16); MID2=$(sha256sum $M2 | cut -c1-16)
D=$T/imgs; mkdir -p $D/sub/deeper
cp data/samples/*.jpeg $D/
cp data/samples/IM-0115-0001.jpeg $D/sub/deeper/dup.jpeg    # same bytes: a cache hit
printf 'not an image' > $D/corrupt.jpeg
echo readme > $D/notes.txt                                  # not an image name: not listed
S1=$(sha256sum data/samples/IM-0115-0001.jpeg | cut -d' ' -f1)

# First run: 4 images + 1 corrupt, exit 1, every record on stdout and in Redis.
$P predict --model $M --redis $URL --threads 1 --batch 2 $D > $T/r1.jsonl 2> $T/r1.err; rc=$?
[ $rc -eq 1 ] && ok "corrupt file -> exit 1" || bad "first run exit $rc: $(tail -n 2 $T/r1.err)"
[ "$(grep -c '"probability"' $T/r1.jsonl)" -eq 4 ] && ok "4 results (folder recursion)" || bad "results: $(cat $T/r1.jsonl)"
grep -q 'notes.txt' $T/r1.jsonl && bad "a .txt was listed" || ok "non-images not listed"
grep -q '"source":"[^"]*corrupt.jpeg","error":"image .*expected a JPEG or PNG' $T/r1.jsonl && ok "failure record" || bad "no failure record"
grep -q "1 of 5 images failed" $T/r1.err && grep -q "predict: 5 images: 4 done" $T/r1.err && ok "summary line" || bad "summary: $(cat $T/r1.err)"
for k in source probability label threshold sha256 model_id model model_sha256 cached time latency_ms run_id; do
    grep '"probability"' $T/r1.jsonl | grep -vq "\"$k\":" && bad "record lacks $k"
done; ok "record keys"
RUN1=$(grep -o '"run_id":"[^"]*"' $T/r1.jsonl | head -n 1 | cut -d'"' -f4)
[ "$($R hget pneumo:result:$MID:$S1 label)" != "" ] && ok "result hash in Redis" || bad "no pneumo:result:$MID:$S1"
[ "$($R hget pneumo:result:$MID:$S1 model_id)" = "$MID" ] && ok "result has model_id" || bad "model_id field"
[ "$($R get "pneumo:source:$MID:$D/sub/deeper/dup.jpeg")" = "$S1" ] && ok "source index" || bad "source index: $($R keys 'pneumo:source:*')"
$R hget pneumo:fail:$RUN1 $D/corrupt.jpeg | grep -q "expected a JPEG or PNG" && ok "failure in Redis" || bad "no pneumo:fail:$RUN1"
[ "$($R hget pneumo:run:$RUN1 status)" = done ] && [ "$($R hget pneumo:run:$RUN1 failed)" = 1 ] &&
    [ "$($R hget pneumo:run:$RUN1 total)" = 5 ] && ok "run summary" || bad "run summary: $($R hgetall pneumo:run:$RUN1 | tr '\n' ' ')"
[ "$($R zscore pneumo:runs $RUN1)" != "" ] && ok "runs index" || bad "no $RUN1 in pneumo:runs"

# Second run: everything cached (same probabilities), nothing recomputed.
$P predict --model $M --redis $URL --threads 1 $D > $T/r2.jsonl 2> $T/r2.err
[ "$(grep -c '"cached":true' $T/r2.jsonl)" -eq 4 ] && ok "re-run: all cached" || bad "re-run: $(grep -c '"cached":true' $T/r2.jsonl) cached"
grep -q "4 done (4 cached)" $T/r2.err && ok "summary counts cache hits" || bad "summary: $(cat $T/r2.err)"
p1=$(grep IM-0115 $T/r1.jsonl | head -n 1 | grep -o '"probability":[^,]*'); p2=$(grep IM-0115 $T/r2.jsonl | head -n 1 | grep -o '"probability":[^,]*')
[ "$p1" = "$p2" ] && ok "cached probability identical" || bad "cached $p2 vs $p1"
# --force recomputes; REDIS_URL is used when --redis is not given.
REDIS_URL=$URL $P predict --model $M --force --threads 1 $D > $T/r3.jsonl 2> /dev/null
[ "$(grep -c '"cached":false' $T/r3.jsonl)" -eq 4 ] && ok "--force recomputes (REDIS_URL)" || bad "--force: $(head -n 2 $T/r3.jsonl)"
# Another model never hits the first model's cache.
$P predict --model $M2 --redis $URL --threads 1 $D > $T/r4.jsonl 2> /dev/null
[ "$(grep -c '"cached":false' $T/r4.jsonl)" -eq 4 ] && grep -q "\"model_id\":\"$MID2\"" $T/r4.jsonl \
    && ok "new model: no old answers" || bad "model 2: $(head -n 2 $T/r4.jsonl)"
[ "$($R hget pneumo:result:$MID2:$S1 model_id)" = "$MID2" ] && ok "model 2 keyed apart" || bad "model 2 result key"

# CSV, --out, stdin list, TTL.
printf '%s\n\n%s\n' data/samples/IM-0115-0001.jpeg data/samples/person1000_bacteria_2931.jpeg |
    $P predict --model $M --redis $URL --format csv --out $T/o.csv --ttl 100 --force --threads 1 - 2> /dev/null \
    && ok "stdin list, csv, exit 0" || bad "stdin/csv run failed"
head -n 1 $T/o.csv | grep -q '^source,probability,label,threshold,sha256,model_id,model,cached,time,latency_ms,run_id,error$' \
    && ok "CSV header" || bad "CSV header: $(head -n 1 $T/o.csv)"
[ "$(wc -l < $T/o.csv)" -eq 3 ] && grep -q "^data/samples/person1000_bacteria_2931.jpeg,0\.[0-9]*,\(NORMAL\|PNEUMONIA\),0.5,[0-9a-f]\{64\},$MID," $T/o.csv \
    && ok "CSV rows" || bad "CSV: $(cat $T/o.csv)"
ttl=$($R ttl pneumo:result:$MID:$S1); [ "$ttl" -gt 0 ] && [ "$ttl" -le 100 ] && ok "--ttl sets expiry" || bad "ttl $ttl"

# Without Redis: files only, as before.
expect 0 '"cached":false' -- $P predict --model $M --format jsonl data/samples/IM-0115-0001.jpeg
# The shipped model on the three samples.
if [ -f weights/pneumo-resnet50.safetensors ]; then
    $P predict --redis $URL --batch 3 data/samples/*.jpeg > $T/w.jsonl 2> $T/w.err \
        && [ "$(grep -c '"label":"\(NORMAL\|PNEUMONIA\)"' $T/w.jsonl)" -eq 3 ] && ok "shipped model, 3 samples" \
        || bad "shipped model: $(tail -n 2 $T/w.err)"
fi

# S3 prefix (recursive) through the local S3 server.
if s3_start predb; then
    if s3_seed $D s3://predb/x/; then
        $P predict --model $M2 --redis $URL --threads 1 s3://predb/x/ > $T/s3.jsonl 2> $T/s3.err; rc=$?
        [ $rc -eq 1 ] && [ "$(grep -c '"source":"s3://predb/x/.*"probability"' $T/s3.jsonl)" -eq 4 ] &&
            grep -q '"source":"s3://predb/x/sub/deeper/dup.jpeg"' $T/s3.jsonl && ok "S3 prefix, recursive" \
            || bad "S3: exit $rc: $(cat $T/s3.jsonl $T/s3.err | tail -n 4)"
        [ "$(grep -c '"cached":true' $T/s3.jsonl)" -eq 4 ] && ok "S3 copies hit the cache by content" || bad "S3 cache hits: $(grep -c '"cached":true' $T/s3.jsonl)"
        [ "$($R get "pneumo:source:$MID2:s3://predb/x/IM-0115-0001.jpeg")" = "$S1" ] && ok "S3 source index" || bad "S3 source index"
        expect 1 'NoSuchBucket' -- $P predict --model $M2 --redis $URL --threads 1 s3://nobucket/x/
        # A missing object among good ones (a list on stdin): recorded with its reason, the rest done.
        printf 's3://predb/x/IM-0115-0001.jpeg\ns3://predb/x/gone.jpeg\n' |
            $P predict --model $M2 --redis $URL --threads 1 --force - > $T/s3m.jsonl 2> $T/s3m.err; rc=$?
        [ $rc -eq 1 ] && grep -q '"source":"s3://predb/x/gone.jpeg".*"error":".*\(NoSuchKey\|404\|not found\|no objects under\)' $T/s3m.jsonl &&
            grep -q '"source":"s3://predb/x/IM-0115-0001.jpeg".*"probability"' $T/s3m.jsonl &&
            ok "S3: a missing object is recorded, the rest done" || bad "S3 missing object: exit $rc: $(cat $T/s3m.jsonl $T/s3m.err | tail -n 3)"
        RUNM=$(sed -n 's/.*run \([0-9TZ]*-[0-9a-f]*\).*/\1/p' $T/s3m.err | tail -n 1)
        $R hget "pneumo:fail:$RUNM" s3://predb/x/gone.jpeg | grep -q . && ok "S3 failure in pneumo:fail:<run>" || bad "fail hash for run '$RUNM': $($R hgetall "pneumo:fail:$RUNM" | tr '\n' ' ')"
        # The S3 server gone mid-list: every object fails with a reason after retries, exit 1.
        s3_stop
        expect 1 's3://predb/x/IM-0115-0001.jpeg' -- $P predict --model $M2 --threads 1 --force s3://predb/x/IM-0115-0001.jpeg
    fi
    s3_stop
fi

# Redis unreachable at start: a clear error before any work (no records, no output file).
DEAD=$(free_port)
expect 1 "cannot connect to Redis at 127.0.0.1:$DEAD.*refused.*start Redis" -- $P predict --model $M --redis redis://127.0.0.1:$DEAD/0 --out $T/none.jsonl $D
[ -e $T/none.jsonl ] && bad "output written although Redis was down" || ok "no work before the Redis check"
expect 1 "NOAUTH|WRONGPASS|AUTH|password" -- $P predict --model $M --redis redis://:wrong@127.0.0.1:$PORT/3 $D

# Redis killed mid-run: bounded retries, the rest still reaches the output, exit 1, --replay.
# Needs the shipped model: the small one finishes before the server can be killed.
if [ -f weights/pneumo-resnet50.safetensors ]; then
    K=$T/many; mkdir -p $K
    for i in $(seq 1 40); do cp data/samples/IM-0115-0001.jpeg $K/i$i.jpeg; printf "$i" >> $K/i$i.jpeg; done
    MK=weights/pneumo-resnet50.safetensors   # slow enough (224 px, 1 thread) to kill Redis mid-run
    $P predict --model $MK --redis $URL --redis-retries 2 --batch 2 --threads 1 --loader-threads 1 --out $T/k.jsonl $K 2> $T/k.err &
    ppid=$!
    i=0
    while [ "$(cat $T/k.jsonl 2> /dev/null | wc -l)" -lt 2 ] && [ $i -lt 300 ]; do i=$((i+1)); sleep 0.02; done
    stop_redis
    wait $ppid; rc=$?
    lines=$(wc -l < $T/k.jsonl)
    if [ "$lines" -eq 40 ] && [ $rc -eq 1 ] && grep -q "pneumo predict --replay $T/k.jsonl" $T/k.err; then
        ok "Redis lost mid-run: all 40 records in the output, exit 1, replay named"
    else
        bad "Redis lost: exit $rc, $lines lines: $(tail -n 3 $T/k.err)"
    fi
    grep -q "lost the connection\|cannot connect" $T/k.err && ok "says Redis was lost" || bad "loss message: $(cat $T/k.err)"
    start_redis   # a fresh, empty server on the same port
    expect 0 "replayed 40 results and 0 failures" -- $P predict --replay $T/k.jsonl --redis $URL
    KS=$(sha256sum $K/i40.jpeg | cut -d' ' -f1); KMID=$(sha256sum $MK | cut -c1-16)
    [ "$($R hget pneumo:result:$KMID:$KS label)" != "" ] && ok "replay wrote the results" || bad "replay: no pneumo:result:$KMID:$KS"
    $P predict --model $MK --redis $URL --threads 1 $K/i40.jpeg 2> /dev/null | grep -q '"cached":true' \
        && ok "replayed results serve as cache" || bad "replayed result not a cache hit"
    expect 1 "not a predict JSON line" -- $P predict --replay $T/r1.err --redis $URL
else
    echo "SKIP part: Redis lost mid-run (needs weights/pneumo-resnet50.safetensors)"
fi

# Usage errors.
expect 2 'unknown option "--bogus"' -- $P predict --model $M --bogus $D
expect 2 "--format expects jsonl, csv or table" -- $P predict --model $M --format xml $D
expect 2 "expected images, folders" -- $P predict --model $M
expect 2 "--replay needs --redis" -- $P predict --replay $T/k.jsonl
expect 2 "--ttl expects" -- $P predict --model $M --ttl -5 $D
expect 1 "expected a URL redis://" -- $P predict --model $M --redis http://x $D
stop_redis
finish predict.sh
