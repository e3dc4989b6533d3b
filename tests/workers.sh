#!/bin/sh
# `pneumo predict --enqueue` + `pneumo worker` against a real redis-server on a loopback port:
# 300 images shared by 3 workers, one killed with SIGKILL mid-run; at the end every image has
# exactly one result record and one done-set member, nothing is pending, and the killed worker's
# pending entries were claimed by the others (XAUTOCLAIM). Then dead letters (a corrupt file,
# --max-deliveries 1), an s3:// prefix (local S3 server, when installed), bad flags (exit 2) and
# Redis unreachable (exit 1).
. tests/lib.sh
if ! command -v redis-server > /dev/null || ! command -v redis-cli > /dev/null; then
    echo "SKIP redis-server / redis-cli not installed (./scripts/install-deps.sh)"
    exit 77
fi
rpid=; wpids=
trap '[ -n "$wpids" ] && kill $wpids 2>/dev/null; [ -n "$spid" ] && kill $spid 2>/dev/null; [ -n "$rpid" ] && kill $rpid 2>/dev/null; rm -rf "$T"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
redis-server --port $PORT --bind 127.0.0.1 --save '' --appendonly no > $T/redis.log 2>&1 &
rpid=$!
i=0
until redis-cli -p $PORT ping > /dev/null 2>&1; do
    i=$((i+1)); [ $i -gt 100 ] && { echo "redis-server did not start: $(tail -n 3 $T/redis.log)"; exit 1; }
    sleep 0.05
done
R="redis-cli -p $PORT -n 2"
URL=redis://127.0.0.1:$PORT/2
unset REDIS_URL
Q=pneumo:queue:batch

M=$T/m.st
$P init --out $M --img-size 64 --width-div 16 --seed 1 > /dev/null || bad "init"
MID=$(sha256sum $M | cut -c1-16)
mkdir -p $T/img
$P augment data/samples/IM-0115-0001.jpeg --seed 1 --n 300 --rotation-range 20 --img-size 64 \
    --out $T/img/x.png > /dev/null 2>&1 || bad "augment"
NIMG=$(ls $T/img | wc -l)
NSHA=$(sha256sum $T/img/* | cut -d' ' -f1 | sort -u | wc -l)
[ "$NIMG" -ge 300 ] && [ "$NSHA" -eq "$NIMG" ] && ok "$NIMG distinct images" || bad "images: $NIMG files, $NSHA distinct"

# Enqueue: one entry per image, the group, the meta total.
expect 0 "enqueued $NIMG images" -- $P predict --enqueue --queue batch --redis $URL $T/img
[ "$($R xlen $Q)" = "$NIMG" ] && ok "stream has $NIMG entries" || bad "xlen $($R xlen $Q)"
[ "$($R hget $Q:meta total)" = "$NIMG" ] && ok "meta total" || bad "meta: $($R hgetall $Q:meta | tr '\n' ' ')"
$R xinfo groups $Q | grep -qx workers && ok "group workers" || bad "no group: $($R xinfo groups $Q)"

# Three workers; w1 takes big reads so that it always holds pending entries; kill it mid-run.
W="$P worker --queue batch --redis $URL --model $M --threads 1 --claim-idle-ms 2000"
$W --consumer w1 --count 32 > $T/w1.log 2>&1 & p1=$!
$W --consumer w2 --count 4 > $T/w2.log 2>&1 & p2=$!
$W --consumer w3 --count 4 > $T/w3.log 2>&1 & p3=$!
wpids="$p1 $p2 $p3"
i=0
while [ "$($R scard $Q:done)" -lt 40 ] && [ $i -lt 400 ]; do i=$((i+1)); sleep 0.02; done
# Freeze w1 and kill it at a moment it holds entries (read, not yet acknowledged).
K=0; i=0
while [ $i -lt 200 ]; do
    kill -STOP $p1
    K=$($R xpending $Q workers - + 1000 w1 | awk 'NR % 4 == 1' | grep -c .)
    [ "$K" -gt 0 ] && break
    kill -CONT $p1; i=$((i+1)); sleep 0.01
done
kill -9 $p1; wait $p1 2> /dev/null
D1=$($R scard $Q:done)
[ "$D1" -lt "$NIMG" ] && ok "w1 killed mid-run ($D1 of $NIMG done, w1 held $K entries)" || bad "the run ended before the kill ($D1 done)"
[ "$K" -gt 0 ] && ok "the killed worker had pending entries" || bad "w1 held nothing at the kill"
wpids="$p2 $p3"
# The others drain the queue and exit 0 (a timeout so that a hang fails).
i=0
while { kill -0 $p2 2> /dev/null || kill -0 $p3 2> /dev/null; } && [ $i -lt 600 ]; do i=$((i+1)); sleep 0.05; done
kill -0 $p2 2> /dev/null || kill -0 $p3 2> /dev/null && bad "workers did not exit within 30 s"
wait $p2; r2=$?; wait $p3; r3=$?; wpids=
[ $r2 -eq 0 ] && [ $r3 -eq 0 ] && ok "w2, w3 exit 0 when drained" || bad "exits $r2 $r3: $(tail -n 2 $T/w2.log $T/w3.log)"
grep -q "drained" $T/w2.log && grep -q "drained" $T/w3.log && ok "drained messages" || bad "no drained line"
NRES=$($R --scan --pattern "pneumo:result:$MID:*" | sort -u | wc -l)
[ "$NRES" -eq "$NIMG" ] && ok "one result record per image ($NRES)" || bad "$NRES result keys for $NIMG images"
[ "$($R scard $Q:done)" -eq "$NIMG" ] && ok "done set has every image" || bad "done: $($R scard $Q:done)"
ls $T/img/* | sort > $T/want; $R smembers $Q:done | sort > $T/got
cmp -s $T/want $T/got && ok "done set == the images" || bad "done set differs: $(diff $T/want $T/got | head -3)"
[ "$($R xpending $Q workers | head -n 1)" = 0 ] && ok "nothing pending" || bad "pending: $($R xpending $Q workers | tr '\n' ' ')"
[ "$($R xpending $Q workers - + 1000 w1 | grep -c .)" -eq 0 ] && ok "w1 holds nothing now" || bad "w1 still holds entries"
grep -h "claimed [0-9]* entries" $T/w2.log $T/w3.log > $T/claims
NCL=$(grep -o "claimed [0-9]*" $T/claims | awk '{s += $2} END {print s + 0}')
[ "$NCL" -ge "$K" ] && ok "the killed worker's $K entries were claimed ($NCL claimed)" || bad "claimed $NCL of $K: $(cat $T/w2.log $T/w3.log | tail -4)"
[ "$($R exists $Q:dead)" = 0 ] && ok "no dead letters" || bad "dead: $($R xrange $Q:dead - +)"
S0=$(sha256sum $T/img/x-0.png | cut -d' ' -f1)
[ "$($R hget pneumo:result:$MID:$S0 run_id)" = "queue:batch" ] && ok "result hash has run_id queue:batch" || bad "result: $($R hgetall pneumo:result:$MID:$S0 | tr '\n' ' ')"
# A second --enqueue of the same inputs queues nothing twice (a resend is idempotent too).
expect 0 "enqueued 0 images .*\($NIMG already in the queue\)" -- $P predict --enqueue --queue batch --redis $URL $T/img
[ "$($R xlen $Q)" = "$NIMG" ] && [ "$($R hget $Q:meta total)" = "$NIMG" ] && ok "re-enqueue added nothing" || bad "after re-enqueue: xlen $($R xlen $Q), total $($R hget $Q:meta total)"
# The queue's run summary, recomputed from the done set and the failures.
RS=pneumo:run:queue:batch
[ "$($R hget $RS status)" = done ] && [ "$($R hget $RS done)" = "$NIMG" ] && [ "$($R hget $RS total)" = "$NIMG" ] &&
    [ "$($R hget $RS failed)" = 0 ] && ok "run summary: done $NIMG of $NIMG" || bad "run summary: $($R hgetall $RS | tr '\n' ' ')"
[ -n "$($R zscore pneumo:runs queue:batch)" ] && ok "queue run listed in pneumo:runs" || bad "not in pneumo:runs"
# A second worker on a drained queue exits 0 at once.
expect 0 "drained: 0 done" -- $W --consumer w4

# Dead letters: a corrupt file, --max-deliveries 1; a good image next to it is still done.
printf 'not an image' > $T/corrupt.png
expect 0 "enqueued 2 images" -- $P predict --enqueue --queue bad --redis $URL $T/corrupt.png $T/img/x-1.png
expect 1 "dead-lettered" -- $P worker --queue bad --redis $URL --model $M --max-deliveries 1 --claim-idle-ms 500
$R xrange pneumo:queue:bad:dead - + | grep -q "corrupt.png" && ok "corrupt file in the dead stream" || bad "dead: $($R xrange pneumo:queue:bad:dead - +)"
$R xrange pneumo:queue:bad:dead - + | grep -q "expected a JPEG or PNG\|image" && ok "dead letter has a reason" || bad "no reason"
[ "$($R xpending pneumo:queue:bad workers | head -n 1)" = 0 ] && ok "dead letter acknowledged" || bad "bad queue pending"
[ "$($R sismember pneumo:queue:bad:done $T/img/x-1.png)" = 1 ] && ok "good image done (cached)" || bad "x-1 not done"
[ "$($R hget pneumo:run:queue:bad failed)" = 1 ] && [ "$($R hget pneumo:run:queue:bad done)" = 1 ] &&
    [ "$($R hget pneumo:run:queue:bad status)" = done ] && ok "bad queue summary: 1 done, 1 failed" || bad "bad summary: $($R hgetall pneumo:run:queue:bad | tr '\n' ' ')"
$R hget pneumo:fail:queue:bad $T/corrupt.png | grep -q . && ok "failure recorded in pneumo:fail:queue:bad" || bad "fail hash: $($R hgetall pneumo:fail:queue:bad | tr '\n' ' ')"
# --max-deliveries 2: the first failure stays pending, the second delivery (a claim) dead-letters.
expect 0 "enqueued 1 images" -- $P predict --enqueue --queue bad2 --redis $URL $T/corrupt.png
expect 1 "dead-lettered .*corrupt.png after 2 deliveries" -- $P worker --queue bad2 --redis $URL --model $M --max-deliveries 2 --claim-idle-ms 300

# --follow: a drained worker keeps waiting, takes new work, and SIGTERM ends it cleanly (exit 0).
$W --consumer f1 --queue fq --follow > $T/f1.log 2>&1 & pf=$!
wpids=$pf
$P predict --enqueue --queue fq --redis $URL $T/img/x-1*.png > /dev/null 2>&1
NF=$($R hget pneumo:queue:fq:meta total)
i=0; while [ "$($R scard pneumo:queue:fq:done)" != "$NF" ] && [ $i -lt 300 ]; do i=$((i+1)); sleep 0.05; done
sleep 0.3
kill -0 $pf 2> /dev/null && ok "--follow worker still running after draining $NF" || bad "--follow worker exited: $(tail -n 2 $T/f1.log)"
$P predict --enqueue --queue fq --redis $URL $T/img/x-2*.png > /dev/null 2>&1
NF2=$($R hget pneumo:queue:fq:meta total)
i=0; while [ "$($R scard pneumo:queue:fq:done)" != "$NF2" ] && [ $i -lt 300 ]; do i=$((i+1)); sleep 0.05; done
[ "$NF2" -gt "$NF" ] && [ "$($R scard pneumo:queue:fq:done)" = "$NF2" ] && ok "--follow worker took the second batch ($NF2 done)" || bad "fq done $($R scard pneumo:queue:fq:done) of $NF2"
kill -TERM $pf
i=0; while kill -0 $pf 2> /dev/null && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.05; done
wait $pf; rf=$?; wpids=
[ $rf -eq 0 ] && grep -q "stopped" $T/f1.log && ok "SIGTERM: exit 0, stopped" || bad "SIGTERM: exit $rf: $(tail -n 2 $T/f1.log)"

# Redis lost mid-run: bounded retries, then exit 1 saying the batch stays pending.
P2=$(free_port)
redis-server --port $P2 --bind 127.0.0.1 --save '' --appendonly no > $T/redis2.log 2>&1 & rpid2=$!
i=0; until redis-cli -p $P2 ping > /dev/null 2>&1; do i=$((i+1)); [ $i -gt 100 ] && break; sleep 0.05; done
U2=redis://127.0.0.1:$P2/0
$P predict --enqueue --queue lost --redis $U2 $T/img > /dev/null 2>&1
$P worker --queue lost --redis $U2 --model $M --threads 1 --count 2 --redis-retries 2 > $T/lost.log 2>&1 & pl=$!
wpids=$pl
i=0; while [ "$(redis-cli -p $P2 scard pneumo:queue:lost:done 2> /dev/null || echo 0)" -lt 10 ] && [ $i -lt 400 ]; do i=$((i+1)); sleep 0.02; done
kill $rpid2; wait $rpid2 2> /dev/null
i=0; while kill -0 $pl 2> /dev/null && [ $i -lt 300 ]; do i=$((i+1)); sleep 0.05; done
kill -0 $pl 2> /dev/null && { bad "worker still running 15 s after Redis went away"; kill $pl; }
wait $pl; rl=$?; wpids=
[ $rl -eq 1 ] && grep -q "Redis" $T/lost.log && ok "Redis lost mid-run: exit 1 after retries: $(tail -n 1 $T/lost.log)" || bad "Redis lost: exit $rl: $(tail -n 2 $T/lost.log)"

# An s3:// prefix through the local S3 server: enqueued by listing, fetched by the worker.
if s3_start qb; then
    mkdir -p $T/s3img && cp $T/img/x-1.png $T/img/x-2.png $T/img/x-3.png $T/s3img/
    if s3_seed $T/s3img s3://qb/p/; then
        expect 0 "enqueued 3 images" -- $P predict --enqueue --queue s3q --redis $URL s3://qb/p/
        expect 0 "drained: 3 done \(3 cached\)" -- $P worker --queue s3q --redis $URL --model $M --threads 1
        [ "$($R sismember pneumo:queue:s3q:done s3://qb/p/x-2.png)" = 1 ] &&
            [ "$($R get "pneumo:source:$MID:s3://qb/p/x-2.png")" = "$(sha256sum $T/img/x-2.png | cut -d' ' -f1)" ] &&
            ok "S3 sources done and indexed" || bad "S3 done: $($R smembers pneumo:queue:s3q:done | tr '\n' ' ')"
    fi
    s3_stop
fi

# Usage errors exit 2; Redis unreachable exits 1.
expect 2 "queue NAME is required" -- $P worker --redis $URL --model $M
expect 2 "max-deliveries" -- $P worker --queue q --redis $URL --model $M --max-deliveries 0
expect 2 "unknown|bogus" -- $P worker --queue q --redis $URL --model $M --bogus
expect 2 "go together" -- $P predict --enqueue --redis $URL $T/img
expect 2 "needs --redis" -- $P worker --queue q --model $M
DEAD=$(free_port)
expect 1 "cannot connect to Redis" -- $P worker --queue q --redis redis://127.0.0.1:$DEAD --model $M
expect 1 "cannot connect to Redis" -- $P predict --enqueue --queue q --redis redis://127.0.0.1:$DEAD $T/img
finish workers
