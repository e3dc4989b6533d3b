#!/bin/sh
# `pneumo serve` and `pneumo token` end to end: a real redis-server on a loopback port, a real
# server, curl. Tokens (add/list/revoke, 0600, refusal without tokens, 401s, reload), uploads
# (multipart and raw) with the same probability as `pneumo predict`, the cache (memory and
# Redis, no new inference on a re-upload), GET by id, history, heat-map PNGs, 400/404/405/413/
# 415, static files and traversal, /metrics, a lone upload not waiting for company, a full queue
# (503 + Retry-After), micro-batching, Redis stopped and restarted under a running server, heat
# maps drawn only when asked for (and by another server from the source in Redis), a heat map
# lost from Redis, SIGTERM. Small model (64 px, --width-div 16): the shipped model's numbers are
# the same code path.
. tests/lib.sh
for c in redis-server redis-cli curl python3; do
    command -v $c > /dev/null || { echo "SKIP $c not installed (./scripts/install-deps.sh)"; exit 77; }
done
rpid=
trap '[ -n "$spid" ] && kill $spid 2>/dev/null; [ -n "$rpid" ] && kill $rpid 2>/dev/null; rm -rf "$T"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
RPORT=$(free_port)
start_redis() {
    redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly no > $T/redis.log 2>&1 &
    rpid=$!
    i=0
    until redis-cli -p $RPORT ping > /dev/null 2>&1; do
        i=$((i+1)); [ $i -gt 100 ] && { echo "redis-server did not start: $(tail -n 3 $T/redis.log)"; exit 1; }
        sleep 0.05
    done
}
stop_redis() { kill $rpid 2> /dev/null; wait $rpid 2> /dev/null; rpid=; }
R="redis-cli -p $RPORT -n 5"
URL=redis://127.0.0.1:$RPORT/5
unset REDIS_URL PNEUMO_TOKENS
PA=$(cd "$(dirname "$P")" && pwd)/$(basename "$P")
# jget FILE KEY: a top-level JSON field (strings bare, booleans true/false).
jget() { python3 -c 'import json,sys
v=json.load(open(sys.argv[1])).get(sys.argv[2])
print(str(v).lower() if isinstance(v,bool) else v)' "$1" "$2" 2> /dev/null; }
# metric NAME: its value in $T/metrics (0 when absent).
metric() { v=$(grep -E "^$1 " $T/metrics | awk '{print $2}'); echo ${v:-0}; }

# ---- tokens ----
TF=$T/tokens
$P token add alice --tokens $TF > $T/tok 2> $T/tok.err && ok "token add" || bad "token add: $(cat $T/tok.err)"
TOK=$(cat $T/tok)
echo "$TOK" | grep -qE '^pn_[A-Za-z0-9_-]{43}$' && ok "token format pn_<base64url>" || bad "token: $TOK"
[ "$(stat -c %a $TF)" = 600 ] && ok "tokens file mode 0600" || bad "mode $(stat -c %a $TF)"
want=$(printf '%s' "$TOK" | sha256sum | cut -c1-64)
grep -qE "^alice sha256:$want [0-9]{4}-[0-9]{2}-[0-9]{2}T" $TF && ok "file holds the SHA-256, not the token" || bad "file: $(cat $TF)"
grep -q "$TOK" $TF && bad "the token itself is in the file"
expect 1 'exists already' -- $P token add alice --tokens $TF
expect 2 'expected a NAME' -- $P token add 'bad name' --tokens $TF
PNEUMO_TOKENS=$TF $P token add bob > $T/tok2 2> /dev/null && ok "PNEUMO_TOKENS" || bad "token add bob"
TOK2=$(cat $T/tok2)
expect 0 'alice.*bob|bob.*alice' -- sh -c "$P token list --tokens $TF | tr '\n' ' '"
expect 1 'no token named "carol"' -- $P token revoke carol --tokens $TF
expect 2 'expected .add NAME., .list. or .revoke NAME.' -- $P token frobnicate --tokens $TF

# ---- refusals at start ----
M=$T/m.st
$P init --out $M --img-size 64 --width-div 16 --seed 1 > /dev/null || bad "init"
MID=$(sha256sum $M | cut -c1-16)
mkdir -p $T/empty
expect 2 'expected --tokens FILE.*--insecure-no-auth' -- sh -c "cd $T/empty && $PA serve --model $M"
expect 2 '--listen expects HOST:PORT' -- $P serve --model $M --tokens $TF --listen nonsense

# ---- the server ----
mkdir -p $T/web/sub
echo '<!doctype html><title>pneumo</title>' > $T/web/index.html
echo 'body{}' > $T/web/sub/a.css
echo 'secret' > $T/outside.txt
ln -s $T/outside.txt $T/web/link.txt
start_redis
SPORT=$(free_port)
B=http://127.0.0.1:$SPORT
start_serve() { # extra flags...
    : > $T/serve.log
    $P serve --model $M --listen 127.0.0.1:$SPORT --redis $URL --tokens $TF --web $T/web \
        --max-bytes 200000 --max-wait-ms 2 --compute-threads 2 "$@" 2> $T/serve.log &
    spid=$!
    i=0
    until grep -q 'listening on' $T/serve.log; do
        i=$((i+1)); if [ $i -gt 200 ] || ! kill -0 $spid 2> /dev/null; then bad "serve did not start: $(tail -n 3 $T/serve.log)"; finish serve; exit 1; fi
        sleep 0.05
    done
}
start_serve
grep -q "listening on http://127.0.0.1:$SPORT (model m.st, id $MID, f32)" $T/serve.log && ok "ready line" || bad "ready: $(cat $T/serve.log)"
api() { curl -s -H "Authorization: Bearer $TOK" "$@"; }
code() { curl -s -o $T/body -w '%{http_code}' "$@"; }
# slow_upload: an upload that takes about 12 s to arrive (120 KB at 10 KB/s) in the background
# ($slowpid): while it is on its way a batch waits for company (--max-wait-ms at most).
slow_upload() {
    head -c 120000 /dev/urandom > $T/slow.bin
    curl -s -o /dev/null -H "Authorization: Bearer $TOK" --limit-rate 10k -F image=@$T/slow.bin \
        $B/api/v1/predictions &
    slowpid=$!
    sleep 0.5 # its headers are in
}

[ "$(code $B/healthz)" = 200 ] && grep -q '"status":"ok"' $T/body && ok "healthz" || bad "healthz: $(cat $T/body)"
[ "$(code $B/readyz)" = 200 ] && grep -q '"redis":true' $T/body && ok "readyz with Redis" || bad "readyz: $(cat $T/body)"

# Auth.
I1=data/samples/IM-0115-0001.jpeg; I2=data/samples/person1000_bacteria_2931.jpeg
I3=data/samples/NORMAL2-IM-1438-0001.jpeg
curl -s -D $T/h -o $T/body -F image=@$I1 $B/api/v1/predictions
head -n 1 $T/h | grep -q ' 401' && grep -qi '^WWW-Authenticate: Bearer' $T/h && grep -q '"error":' $T/body \
    && ok "401 without a token (WWW-Authenticate, JSON)" || bad "no token: $(head -n 1 $T/h) $(cat $T/body)"
[ "$(code -H 'Authorization: Bearer pn_wrong' $B/api/v1/predictions)" = 401 ] && ok "401 with a bad token" || bad "bad token: $(cat $T/body)"
[ "$(code -H "Authorization: Bearer $TOK2" $B/api/v1/predictions)" = 200 ] && ok "second token works" || bad "bob: $(cat $T/body)"

# Upload, multipart: the fields, and predict's probability.
api -D $T/h1 -F "image=@$I1;filename=patient-name.jpeg" $B/api/v1/predictions > $T/p1.json
S1=$(sha256sum $I1 | cut -c1-64)
head -n 1 $T/h1 | grep -q ' 200' && ok "multipart upload 200" || bad "upload: $(head -n 1 $T/h1) $(cat $T/p1.json)"
grep -qi '^X-Content-Type-Options: nosniff' $T/h1 && grep -qi '^Cache-Control: no-store' $T/h1 \
    && ok "API headers nosniff, no-store" || bad "headers: $(cat $T/h1)"
for k in id sha256 probability label threshold model model_id cached latency_ms time heatmap; do
    python3 -c 'import json,sys; sys.exit(0 if sys.argv[2] in json.load(open(sys.argv[1])) else 1)' $T/p1.json $k || bad "JSON lacks $k: $(cat $T/p1.json)"
done; ok "JSON fields"
[ "$(jget $T/p1.json id)" = "$S1" ] && [ "$(jget $T/p1.json model_id)" = "$MID" ] && [ "$(jget $T/p1.json cached)" = false ] \
    && [ "$(jget $T/p1.json heatmap)" = "/api/v1/predictions/$S1/heatmap.png" ] && ok "id, model_id, cached:false, heatmap URL" \
    || bad "record: $(cat $T/p1.json)"
$P predict --model $M $I1 $I2 2> /dev/null > $T/pred.jsonl
pp1=$(grep IM-0115 $T/pred.jsonl | python3 -c 'import json,sys; print(json.load(sys.stdin)["probability"])')
python3 -c 'import sys; sys.exit(0 if abs(float(sys.argv[1])-float(sys.argv[2])) < 1e-5 else 1)' "$(jget $T/p1.json probability)" "$pp1" \
    && ok "probability = pneumo predict's ($pp1)" || bad "serve $(jget $T/p1.json probability) vs predict $pp1"
[ "$($R hget pneumo:result:$MID:$S1 source)" = upload ] && ok "Redis result, source \"upload\"" || bad "redis: $($R hgetall pneumo:result:$MID:$S1 | tr '\n' ' ')"
$R --scan --pattern '*' | xargs -r -n1 $R dump 2> /dev/null | grep -q patient-name && bad "the file name reached Redis" || ok "no file name in Redis"
grep -q patient-name $T/serve.log && bad "the file name reached the log" || ok "no file name in the log"
[ -z "$($R --scan --pattern "pneumo:source:*")" ] && ok "uploads write no source index" || bad "source keys: $($R --scan --pattern "pneumo:source:*" | head -n 2)"
# The heat map is not drawn at upload: only its source (grey pixels + the map) is kept.
curl -s $B/metrics > $T/metrics
[ "$($R exists pneumo:heatmap:$MID:$S1)" = 0 ] && [ "$(metric pneumo_heatmaps_rendered_total)" = 0 ] \
    && [ "$($R getrange pneumo:heatsrc:$MID:$S1 0 3)" = PNHS ] && ok "upload: no heat map drawn, its source in Redis" \
    || bad "heat map at upload: heatmap key $($R exists pneumo:heatmap:$MID:$S1), drawn $(metric pneumo_heatmaps_rendered_total), source $($R strlen pneumo:heatsrc:$MID:$S1)"
# 24-byte header, a 2x2 map (64 px model), 224x224 grey pixels: a third of RGB.
[ "$($R strlen pneumo:heatsrc:$MID:$S1)" = $((24 + 2 * 2 * 4 + 224 * 224)) ] && ok "grey X-ray kept as one channel" \
    || bad "source size $($R strlen pneumo:heatsrc:$MID:$S1)"
grep -q "$TOK" $T/serve.log && bad "a token reached the log"

# Raw body.
api -H 'Content-Type: image/jpeg' --data-binary @$I2 $B/api/v1/predictions > $T/p2.json
pp2=$(grep person1000 $T/pred.jsonl | python3 -c 'import json,sys; print(json.load(sys.stdin)["probability"])')
python3 -c 'import sys; sys.exit(0 if abs(float(sys.argv[1])-float(sys.argv[2])) < 1e-5 else 1)' "$(jget $T/p2.json probability)" "$pp2" \
    && [ "$(jget $T/p2.json cached)" = false ] && ok "raw upload = predict's ($pp2)" || bad "raw: $(cat $T/p2.json) vs $pp2"

# Re-upload: cached, and no new forward pass.
curl -s $B/metrics > $T/metrics
b0=$(metric pneumo_inference_batch_size_count); h0=$(metric pneumo_cache_hits_total); m0=$(metric pneumo_cache_misses_total)
api -F image=@$I1 $B/api/v1/predictions > $T/p1b.json
[ "$(jget $T/p1b.json cached)" = true ] && [ "$(jget $T/p1b.json probability)" = "$(jget $T/p1.json probability)" ] \
    && ok "re-upload: cached:true, same probability" || bad "re-upload: $(cat $T/p1b.json)"
curl -s $B/metrics > $T/metrics
[ "$(metric pneumo_inference_batch_size_count)" = "$b0" ] && [ "$(metric pneumo_cache_hits_total)" = $((h0+1)) ] \
    && [ "$(metric pneumo_cache_misses_total)" = "$m0" ] && [ "$b0" -ge 2 ] \
    && ok "metrics: a hit, no new inference ($b0 forwards)" || bad "metrics: batches $b0 -> $(metric pneumo_inference_batch_size_count), hits $h0 -> $(metric pneumo_cache_hits_total)"

# GET by id, history.
api $B/api/v1/predictions/$S1 > $T/g1.json
[ "$(jget $T/g1.json cached)" = true ] && [ "$(jget $T/g1.json probability)" = "$(jget $T/p1.json probability)" ] \
    && ok "GET by id" || bad "GET id: $(cat $T/g1.json)"
api "$B/api/v1/predictions?limit=1" > $T/l1.json
python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["predictions"]; sys.exit(0 if len(p)==1 and p[0]["id"]==sys.argv[2] else 1)' $T/l1.json $S1 \
    && ok "history limit=1: the newest (the re-upload)" || bad "history: $(cat $T/l1.json)"
api "$B/api/v1/predictions" > $T/l2.json
python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["predictions"]; sys.exit(0 if len(p)==2 else 1)' $T/l2.json \
    && ok "history default: both" || bad "history: $(cat $T/l2.json)"
[ "$($R zcard pneumo:history)" = 2 ] && $R zscore pneumo:history "$MID:$S1" > /dev/null && ok "pneumo:history in Redis" || bad "zset: $($R zrange pneumo:history 0 -1)"
[ "$(code -H "Authorization: Bearer $TOK" "$B/api/v1/predictions?limit=101")" = 400 ] && ok "limit 101 -> 400" || bad "limit: $(cat $T/body)"

# Heat maps: PNG at the image's size (long side capped at 512).
png_size() { python3 -c 'import struct,sys
b=open(sys.argv[1],"rb").read()
assert b[:8]==b"\x89PNG\r\n\x1a\n" and b[12:16]==b"IHDR"
print("%dx%d" % struct.unpack(">II", b[16:24]))' "$1" 2> /dev/null; }
curl -s $B/metrics > $T/metrics; hm0=$(metric pneumo_heatmaps_rendered_total)
api -D $T/hh -o $T/h1.png $B/api/v1/predictions/$S1/heatmap.png
[ "$(png_size $T/h1.png)" = 224x224 ] && grep -qi '^Content-Type: image/png' $T/hh && ok "heatmap.png 224x224" || bad "heatmap: $(head -c 200 $T/h1.png)"
[ "$($R strlen pneumo:heatmap:$MID:$S1)" -gt 100 ] && [ "$($R exists pneumo:heatsrc:$MID:$S1)" = 0 ] \
    && ok "heat map in Redis once drawn, its source gone" || bad "no pneumo:heatmap:$MID:$S1 (source $($R exists pneumo:heatsrc:$MID:$S1))"
$R get pneumo:heatmap:$MID:$S1 | head -c -1 > $T/h1r.png # redis-cli adds a newline
api -o $T/h1b.png $B/api/v1/predictions/$S1/heatmap.png
curl -s $B/metrics > $T/metrics
cmp -s $T/h1.png $T/h1b.png && cmp -s $T/h1.png $T/h1r.png && [ "$(metric pneumo_heatmaps_rendered_total)" = $((hm0+1)) ] \
    && ok "drawn once: the second GET and Redis hold the same bytes" || bad "second GET: drawn $hm0 -> $(metric pneumo_heatmaps_rendered_total), $(cmp $T/h1.png $T/h1b.png; cmp $T/h1.png $T/h1r.png)"
api -F image=@$I3 $B/api/v1/predictions > $T/p3.json
S3=$(sha256sum $I3 | cut -c1-64)
api -o $T/h3.png $B/api/v1/predictions/$S3/heatmap.png
[ "$(png_size $T/h3.png)" = 512x426 ] && ok "heatmap of a 1328x1104 original: 512x426" || bad "heatmap 3: $(png_size $T/h3.png) $(cat $T/p3.json)"
if command -v file > /dev/null; then file $T/h3.png | grep -q 'PNG image data, 512 x 426' && ok "file(1) agrees" || bad "file: $(file $T/h3.png)"; fi

# Bad input.
head -c 300000 /dev/zero > $T/big.bin
[ "$(code -H "Authorization: Bearer $TOK" -H 'Content-Type: image/jpeg' --data-binary @$T/big.bin $B/api/v1/predictions)" = 413 ] \
    && grep -q '"error":"expected an image of at most 200000 bytes' $T/body && ok "413 over --max-bytes" || bad "413: $(cat $T/body)"
[ "$(code -H "Authorization: Bearer $TOK" -H 'Transfer-Encoding: chunked' -H 'Content-Type: image/jpeg' --data-binary @$T/big.bin $B/api/v1/predictions)" = 413 ] \
    && ok "413 over --max-bytes, chunked (no Content-Length)" || bad "413 chunked: $(cat $T/body)"
echo 'just some text' > $T/notes.txt
[ "$(code -H "Authorization: Bearer $TOK" -F image=@$T/notes.txt $B/api/v1/predictions)" = 415 ] \
    && grep -q '"error":"expected a JPEG or PNG image, got text"' $T/body && ok "415 for text" || bad "415: $(cat $T/body)"
head -c 3000 $I1 > $T/trunc.jpeg
[ "$(code -H "Authorization: Bearer $TOK" -F image=@$T/trunc.jpeg $B/api/v1/predictions)" = 400 ] \
    && grep -q '"error":' $T/body && ok "400 for a truncated JPEG" || bad "truncated: $(cat $T/body)"
python3 -c 'import struct,zlib,sys
def ch(t,d): return struct.pack(">I",len(d))+t+d+struct.pack(">I",zlib.crc32(t+d))
open(sys.argv[1],"wb").write(b"\x89PNG\r\n\x1a\n"+ch(b"IHDR",struct.pack(">IIBBBBB",10000,10000,8,0,0,0,0))+ch(b"IEND",b""))' $T/huge.png
[ "$(code -H "Authorization: Bearer $TOK" -F image=@$T/huge.png $B/api/v1/predictions)" = 413 ] \
    && grep -q 'pixels, got 10000x10000' $T/body && ok "413 over --max-pixels (from the header)" || bad "pixels: $(cat $T/body)"
[ "$(code -H "Authorization: Bearer $TOK" $B/api/v1/predictions/$(printf '0%.0s' $(seq 64)))" = 404 ] \
    && grep -q '"error":' $T/body && ok "404 for an unknown id" || bad "unknown id: $(cat $T/body)"
[ "$(code -H "Authorization: Bearer $TOK" $B/api/v1/predictions/xyz)" = 400 ] && ok "400 for a malformed id" || bad "bad id: $(cat $T/body)"
[ "$(code -H "Authorization: Bearer $TOK" $B/api/v1/nothing)" = 404 ] && grep -q '"error":' $T/body && ok "404 JSON for an unknown API route" || bad "api 404: $(cat $T/body)"
[ "$(code -X DELETE -H "Authorization: Bearer $TOK" $B/api/v1/predictions/$S1)" = 405 ] && ok "405 for DELETE" || bad "405: $(cat $T/body)"

# Static files.
[ "$(code -D $T/hs $B/)" = 200 ] && grep -q pneumo $T/body && grep -qi '^Content-Type: text/html' $T/hs && ok "/ -> index.html" || bad "index: $(cat $T/hs)"
[ "$(code -D $T/hs $B/sub/a.css)" = 200 ] && grep -qi '^Content-Type: text/css' $T/hs && ok "css" || bad "css: $(cat $T/hs)"
cp Makefile $T/Makefile
for u in '/../Makefile' '/%2e%2e/Makefile' '/sub/../../Makefile' '/%2E%2E%2FMakefile' '/link.txt' '/sub' '/nope.html'; do
    c=$(code --path-as-is "$B$u"); [ "$c" = 404 ] && ! grep -q secret $T/body && ! grep -q 'BUILD' $T/body && ok "static $u -> 404" || bad "static $u -> $c"
done

# Metrics names.
curl -s $B/metrics > $T/metrics
for name in 'pneumo_http_requests_total{route="/api/v1/predictions",code="200"}' 'pneumo_http_request_duration_seconds_bucket{route="/api/v1/predictions/{id}",le=' \
    'pneumo_inference_batch_size_bucket' 'pneumo_inference_seconds_bucket' 'pneumo_cache_hits_total ' 'pneumo_cache_misses_total ' \
    'pneumo_queue_depth ' 'pneumo_redis_up 1' "pneumo_model_info{model=\"m.st\",model_id=\"$MID\",dtype=\"f32\"} 1"; do
    grep -qF "$name" $T/metrics || bad "metrics lack $name"
done; ok "metrics names"
grep -q "$S1" $T/metrics && bad "a raw path in the metrics" || ok "routes are templates"

# SIGHUP reloads at once (a request just now checked the file's mtime, so only the signal can).
sleep 1.1 # the next request re-checks the mtime (at most once a second), the one after cannot
[ "$(code -H "Authorization: Bearer $TOK" $B/api/v1/predictions)" = 200 ] || bad "list before HUP"
$P token add carol --tokens $TF > $T/tok3 2> /dev/null
kill -HUP $spid; sleep 0.2
[ "$(code -H "Authorization: Bearer $(cat $T/tok3)" $B/api/v1/predictions)" = 200 ] && ok "SIGHUP reloads the tokens" || bad "HUP: $(cat $T/body)"

# Token reload: a revoked token stops working within about a second.
$P token revoke bob --tokens $TF 2> /dev/null
sleep 1.2
[ "$(code -H "Authorization: Bearer $TOK2" $B/api/v1/predictions)" = 401 ] && ok "revoked token refused (reload)" || bad "revoke: $(cat $T/body)"

# Redis down: readyz 503, uploads still answered; back: readyz 200, caching again.
N1=$(ls ../shared/data/chest_xray/train/NORMAL/*.jpeg 2> /dev/null | sed -n 5p)
N2=$(ls ../shared/data/chest_xray/train/NORMAL/*.jpeg 2> /dev/null | sed -n 6p)
[ -n "$N1" ] && [ -n "$N2" ] || { N1=$T/n1.jpeg; N2=$T/n2.jpeg; cp $I1 $N1; cp $I2 $N2; printf 'x' >> $N1; printf 'y' >> $N2; }
stop_redis
[ "$(code $B/readyz)" = 503 ] && grep -q '"redis":false' $T/body && ok "readyz 503 with Redis down" || bad "readyz down: $(cat $T/body)"
t0=$(date +%s%N)
api -F image=@$N1 $B/api/v1/predictions > $T/d1.json
t1=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$(jget $T/d1.json cached)" = false ] && [ -n "$(jget $T/d1.json probability)" ] && ok "upload with Redis down: answered (${t1} ms)" || bad "down upload: $(cat $T/d1.json)"
api -o $T/d1.png $B/api/v1/predictions/$(jget $T/d1.json id)/heatmap.png
[ "$(png_size $T/d1.png)" != "" ] && ok "heat map from memory with Redis down" || bad "heatmap down: $(head -c 100 $T/d1.png)"
start_redis
i=0; until [ "$(code $B/readyz)" = 200 ] || [ $i -gt 50 ]; do i=$((i+1)); sleep 0.1; done
[ $i -le 50 ] && ok "readyz 200 again after restart (~$((i*100)) ms)" || bad "readyz after restart: $(cat $T/body)"
api -F image=@$N2 $B/api/v1/predictions > $T/d2.json
SN2=$(sha256sum $N2 | cut -c1-64)
[ "$(jget $T/d2.json cached)" = false ] && [ "$($R hget pneumo:result:$MID:$SN2 source)" = upload ] && ok "caching in Redis again" || bad "after restart: $(cat $T/d2.json)"

# A hung Redis (SIGSTOP): requests skip it after one short timeout.
kill -STOP $rpid
N3=$(ls ../shared/data/chest_xray/train/NORMAL/*.jpeg 2> /dev/null | sed -n 7p)
[ -n "$N3" ] || { N3=$T/n3.jpeg; cp $I1 $N3; printf 'z' >> $N3; }
t0=$(date +%s%N)
api -F image=@$N3 $B/api/v1/predictions > $T/d3.json
t1=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$(jget $T/d3.json cached)" = false ] && [ $t1 -lt 3000 ] && ok "Redis hung: answered in ${t1} ms" || bad "hung Redis: ${t1} ms $(cat $T/d3.json)"
[ "$(code $B/readyz)" = 503 ] && ok "readyz 503 with Redis hung" || bad "readyz hung: $(cat $T/body)"
kill -CONT $rpid
i=0; until [ "$(code $B/readyz)" = 200 ] || [ $i -gt 50 ]; do i=$((i+1)); sleep 0.1; done
[ $i -le 50 ] && ok "readyz 200 when Redis continues" || bad "readyz after CONT: $(cat $T/body)"

# A lone upload does not wait for company (--max-wait-ms 3000: nothing else is arriving).
kill $spid; wait $spid; rc=$?; spid=
[ $rc -eq 0 ] && ok "SIGTERM -> exit 0" || bad "SIGTERM exit $rc: $(tail -n 3 $T/serve.log)"
grep -q 'stopped' $T/serve.log && ok "clean shutdown" || bad "shutdown: $(tail -n 3 $T/serve.log)"
start_serve --queue 1 --max-wait-ms 3000 --max-batch 8
$R flushdb > /dev/null
t=$(curl -s -o $T/lone.json -w '%{time_total}' -H "Authorization: Bearer $TOK" -F image=@$I3 $B/api/v1/predictions)
[ "$(jget $T/lone.json cached)" = false ] && awk "BEGIN {exit !($t < 1.5)}" \
    && ok "a lone upload runs at once (${t} s, --max-wait-ms 3000)" || bad "lone upload: ${t} s $(cat $T/lone.json)"
# A full queue: 503 + Retry-After (one slot; the first job waits 3 s for company, since a slow
# upload is on its way).
slow_upload
for k in 1 2 3; do
    f=$I1; [ $k = 2 ] && f=$N1; [ $k = 3 ] && f=$N2
    $R flushdb > /dev/null
    curl -s -D $T/q$k.h -o $T/q$k.json -H "Authorization: Bearer $TOK" -F image=@$f $B/api/v1/predictions &
    eval qp$k=$!
    sleep 0.3
done
wait $qp1 $qp2 $qp3
n503=$(grep -l ' 503' $T/q1.h $T/q2.h $T/q3.h | wc -l)
[ "$n503" -ge 1 ] && grep -qi '^Retry-After: 1' $(grep -l ' 503' $T/q1.h $T/q2.h $T/q3.h | head -n 1) \
    && head -n 1 $T/q1.h | grep -q ' 200' && ok "full queue: 503 + Retry-After ($n503 of 3), the first answered" \
    || bad "queue: $(head -n 1 $T/q1.h $T/q2.h $T/q3.h | tr '\n' ' ')"
kill $slowpid 2> /dev/null; wait $slowpid 2> /dev/null

# Micro-batching: three concurrent uploads within --max-wait-ms share one forward pass (a slow
# upload on its way keeps the batch waiting), and the batched probabilities are predict's.
kill $spid; wait $spid; spid=
$R flushdb > /dev/null
start_serve --max-wait-ms 1500 --max-batch 8
slow_upload
for k in 1 2 3; do
    f=$I1; [ $k = 2 ] && f=$I2; [ $k = 3 ] && f=$N1
    api -F image=@$f $B/api/v1/predictions > $T/b$k.json &
    eval bp$k=$!
done
wait $bp1 $bp2 $bp3
curl -s $B/metrics > $T/metrics
[ "$(metric pneumo_inference_batch_size_count)" = 1 ] && [ "$(metric pneumo_inference_batch_size_sum)" = 3 ] \
    && ok "3 concurrent uploads: one batch of 3" || bad "batches: $(grep batch_size_ $T/metrics | tr '\n' ' ')"
kill $slowpid 2> /dev/null; wait $slowpid 2> /dev/null
python3 -c 'import json,sys; a=json.load(open(sys.argv[1]))["probability"]; b=json.load(open(sys.argv[2]))["probability"]
sys.exit(0 if abs(a-float(sys.argv[3]))<1e-5 and abs(b-float(sys.argv[4]))<1e-5 else 1)' $T/b1.json $T/b2.json "$pp1" "$pp2" \
    && ok "batched probabilities = predict's" || bad "batched: $(cat $T/b1.json $T/b2.json) vs $pp1 $pp2"

# Another server (empty memory, as a second process behind nginx) draws a heat map from the
# source in Redis; the PNG expires with the result (--ttl), not a --ttl after the GET.
kill $spid; wait $spid; spid=
$R flushdb > /dev/null
start_serve --ttl 1000
api -F image=@$I2 $B/api/v1/predictions > /dev/null # fills Redis (flushed above)
S2=$(sha256sum $I2 | cut -c1-64)
t=$($R ttl pneumo:heatsrc:$MID:$S2)
[ "$t" -gt 990 ] && [ "$t" -le 1000 ] && ok "heat-map source expires with --ttl ($t s)" || bad "source ttl $t"
kill $spid; wait $spid; spid=
start_serve --ttl 1000
api -o $T/h2.png $B/api/v1/predictions/$S2/heatmap.png
curl -s $B/metrics > $T/metrics
t=$($R ttl pneumo:heatmap:$MID:$S2)
[ "$(png_size $T/h2.png)" = 224x224 ] && [ "$(metric pneumo_heatmaps_rendered_total)" = 1 ] && [ "$($R exists pneumo:heatsrc:$MID:$S2)" = 0 ] \
    && [ "$t" -gt 900 ] && [ "$t" -le 1000 ] && ok "a fresh server draws it from Redis (PNG ttl $t s)" \
    || bad "draw from Redis: $(png_size $T/h2.png) drawn $(metric pneumo_heatmaps_rendered_total) ttl $t"
api -o $T/h2b.png $B/api/v1/predictions/$S2/heatmap.png
curl -s $B/metrics > $T/metrics
cmp -s $T/h2.png $T/h2b.png && [ "$(metric pneumo_heatmaps_rendered_total)" = 1 ] && ok "second GET: the same PNG, not drawn again" \
    || bad "second GET from Redis: drawn $(metric pneumo_heatmaps_rendered_total)"
# An unusable source (another version, damaged): dropped, 404, and a re-upload recomputes it.
$R del pneumo:heatmap:$MID:$S2 > /dev/null
$R set pneumo:heatsrc:$MID:$S2 PNHS-garbage > /dev/null
[ "$(code -H "Authorization: Bearer $TOK" $B/api/v1/predictions/$S2/heatmap.png)" = 404 ] && grep -q 'upload the image again' $T/body \
    && [ "$($R exists pneumo:heatsrc:$MID:$S2)" = 0 ] && grep -q 'dropped an unusable heat-map source' $T/serve.log \
    && ! grep -q "$S2" $T/serve.log && ok "damaged source: 404, dropped, logged without the id" || bad "damaged source: $(cat $T/body)"
# A result whose heat map left Redis (drawn or not): the upload recomputes the map only.
kill $spid; wait $spid; spid=
start_serve
$R del pneumo:heatmap:$MID:$S2 pneumo:heatsrc:$MID:$S2 > /dev/null
curl -s $B/metrics > $T/metrics; b0=$(metric pneumo_inference_batch_size_count)
api -F image=@$I2 $B/api/v1/predictions > $T/r2.json
curl -s $B/metrics > $T/metrics
[ "$(jget $T/r2.json cached)" = true ] && [ "$($R exists pneumo:heatsrc:$MID:$S2)" = 1 ] && [ "$(metric pneumo_inference_batch_size_count)" = $((b0+1)) ] \
    && ok "cached result, lost heat map recomputed" || bad "heatmap recompute: $(cat $T/r2.json) exists=$($R exists pneumo:heatsrc:$MID:$S2)"
api -o $T/h2c.png $B/api/v1/predictions/$S2/heatmap.png
cmp -s $T/h2.png $T/h2c.png && ok "recomputed heat map: the same PNG" || bad "recomputed heat map differs"
kill -INT $spid; wait $spid; rc=$?; spid=
[ $rc -eq 0 ] && ok "SIGINT -> exit 0" || bad "SIGINT exit $rc"

# Redis down at the start: the server starts, is not ready, and answers uncached.
DEAD=$(free_port)
start_serve --redis redis://127.0.0.1:$DEAD/0
grep -q 'does not answer; serving uncached' $T/serve.log && ok "Redis down at start: starts anyway" || bad "start without Redis: $(cat $T/serve.log)"
[ "$(code $B/readyz)" = 503 ] && ok "readyz 503" || bad "readyz: $(cat $T/body)"
api -F image=@$I2 $B/api/v1/predictions > $T/n.json
[ "$(jget $T/n.json cached)" = false ] && ok "upload answered uncached" || bad "no Redis: $(cat $T/n.json)"
kill $spid; wait $spid; spid=

# The shipped model by default: the same probability as pneumo predict.
if [ -f weights/pneumo-resnet50.safetensors ]; then
    : > $T/serve.log
    $P serve --listen 127.0.0.1:$SPORT --insecure-no-auth --web $T/web 2> $T/serve.log &
    spid=$!
    i=0; until grep -q 'listening on' $T/serve.log || [ $i -gt 300 ]; do i=$((i+1)); sleep 0.05; done
    grep -q 'WITHOUT AUTH' $T/serve.log && grep -q '(model pneumo-resnet50.safetensors, id' $T/serve.log \
        && ok "default model, --insecure-no-auth said" || bad "shipped: $(cat $T/serve.log)"
    curl -s -F image=@$I3 $B/api/v1/predictions > $T/s3.json
    ps=$($P predict $I3 2> /dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["probability"])')
    python3 -c 'import sys; sys.exit(0 if abs(float(sys.argv[1])-float(sys.argv[2])) < 1e-5 else 1)' "$(jget $T/s3.json probability)" "$ps" \
        && ok "shipped model: serve = predict ($ps, $(jget $T/s3.json label))" || bad "shipped: $(cat $T/s3.json) vs $ps"
    kill $spid; wait $spid; spid=
fi
stop_redis
finish serve
