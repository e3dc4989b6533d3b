#!/bin/sh
# The real stack (deploy/stack.sh: redis-server, the S3 test server, `pneumo serve` with the
# shipped model, nginx with TLS) on free loopback ports in a temporary folder, checked from
# outside with curl and the stack's own CA: security headers and CSP, TLS versions, the HTTP
# redirect, tokens, a real X-ray -> JSON -> heat map PNG (drawn on its first GET only, also by a
# second serve process on the same Redis), body and rate limits, bad images,
# path traversal, /metrics from loopback only, Redis stopped and restarted, and `down`.
. tests/lib.sh
stack_need
s2pid=
trap '[ -n "$s2pid" ] && kill $s2pid 2> /dev/null; stack_down; rm -rf "$T"' EXIT
stack_up || exit 1
ok "stack up at $URL"
C="curl -sS --cacert $CA --max-time 60"
AUTH="Authorization: Bearer $TOKEN"
IMG=../shared/data/chest_xray/val/NORMAL/NORMAL2-IM-1427-0001.jpeg
IMG2=../shared/data/chest_xray/val/PNEUMONIA/person1946_bacteria_4874.jpeg
if [ ! -f $IMG ] || [ ! -f $IMG2 ]; then   # without the shared data set: the shipped samples
    IMG=data/samples/NORMAL2-IM-1438-0001.jpeg; IMG2=data/samples/person1000_bacteria_2931.jpeg
fi
# code URL-PATH [CURL ARGS]: prints the HTTP status of a request through nginx.
code() { p=$1; shift; $C -o /dev/null -w '%{http_code}' "$@" "$URL$p"; }
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {"d": d}))' "$1"; }

# ---- up, status, idempotence ----
deploy/stack.sh status > $T/st 2>&1 && [ "$(grep -c ' up ' $T/st)" -eq 4 ] && ok "status: 4 services up" || bad "status: $(cat $T/st)"
deploy/stack.sh up > $T/up2 2>&1 && grep -q "already up" $T/up2 && grep -q "token: pn_" $T/up2 && ok "second up: already up, same token" || bad "second up: $(cat $T/up2)"
PIDS=$(cat $SDIR/*.pid)

# ---- the page and its headers ----
$C -D $T/h -o $T/index.html $URL/ || bad "GET / failed"
grep -q '<h1>pneumo</h1>' $T/index.html && ok "page served over HTTPS with the stack's CA" || bad "no page"
hdr() { grep -i "^$1:" $T/h | head -n 1 | cut -d' ' -f2- | tr -d '\r'; }
case "$(hdr strict-transport-security)" in max-age=63072000*) ok "HSTS" ;; *) bad "HSTS: $(hdr strict-transport-security)" ;; esac
csp=$(hdr content-security-policy)
echo "$csp" | grep -q "default-src 'self'" && echo "$csp" | grep -q "img-src 'self' blob: data:" &&
    echo "$csp" | grep -q "frame-ancestors 'none'" && ! echo "$csp" | grep -q unsafe && ok "CSP: $csp" || bad "CSP: $csp"
[ "$(hdr x-content-type-options)" = nosniff ] && [ "$(hdr x-frame-options)" = DENY ] &&
    [ "$(hdr referrer-policy)" = no-referrer ] && [ -n "$(hdr permissions-policy)" ] && ok "security headers" || bad "headers: $(cat $T/h)"
[ "$(hdr server)" = nginx ] && ok "server_tokens off (no version)" || bad "Server: $(hdr server)"
grep -Eq '<script>|<script [^>]*>[^<]|style=|<style|on(click|load|error)=' web/index.html && bad "inline script or style in index.html" || ok "no inline scripts or styles"
$C -D $T/h2 -o /dev/null $URL/js/app.js && grep -qi '^content-type: text/javascript' $T/h2 && ok "app.js as text/javascript" || bad "app.js: $(cat $T/h2)"
$C -D $T/h3 -o /dev/null $URL/api/v1/predictions
grep -qi '^strict-transport-security' $T/h3 && ok "headers on /api errors too" || bad "no HSTS on a 401"

# ---- TLS versions (the server refuses 1.0 and 1.1 even to a client that allows them) ----
for v in 1.0 1.1; do
    $C --tlsv$v --tls-max $v -o /dev/null $URL/healthz 2> /dev/null && bad "TLS $v accepted" || ok "TLS $v refused"
done
for v in 1 1_1; do
    openssl s_client -connect 127.0.0.1:$PNEUMO_HTTPS_PORT -tls$v -cipher 'DEFAULT:@SECLEVEL=0' < /dev/null > $T/s$v 2>&1
    grep -q "alert protocol version" $T/s$v && ok "openssl -tls$v (every cipher allowed): refused by the server (alert protocol version)" || bad "openssl -tls$v: $(tail -n 3 $T/s$v)"
done
for v in 1.2 1.3; do
    [ "$(code /healthz --tlsv$v --tls-max $v)" = 200 ] && ok "TLS $v accepted" || bad "TLS $v refused"
done

# ---- HTTP redirect, tokens ----
r=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' "http://127.0.0.1:$PNEUMO_HTTP_PORT/some/page?x=1")
[ "$r" = "301 $URL/some/page?x=1" ] && ok "http:// -> 301 $URL/..." || bad "redirect: $r"
$C -o $T/401 -w '%{http_code}' $URL/api/v1/predictions?limit=1 > $T/c
[ "$(cat $T/c)" = 401 ] && grep -q '"error"' $T/401 && ok "401 + JSON without a token" || bad "no token: $(cat $T/c) $(cat $T/401)"
[ "$(code /api/v1/predictions -H 'Authorization: Bearer pn_0000')" = 401 ] && ok "401 with a wrong token" || bad "wrong token accepted"

# ---- a real X-ray: JSON, cache, heat map ----
SHA=$(sha256sum $IMG | cut -d' ' -f1)
$C -H "$AUTH" -F "image=@$IMG;type=image/jpeg" -o $T/p1.json -w '%{http_code}' $URL/api/v1/predictions > $T/c
if [ "$(cat $T/c)" = 200 ] && [ "$(json 'd["sha256"]' < $T/p1.json)" = $SHA ] &&
   json '0 <= d["probability"] <= 1 and d["label"] in ("NORMAL", "PNEUMONIA") and len(d["model_id"]) == 16 and d["cached"] is False' < $T/p1.json | grep -q True
then ok "X-ray -> $(json '"%s %.3f" % (d["label"], d["probability"])' < $T/p1.json) (not cached)"
else bad "prediction: $(cat $T/c) $(cat $T/p1.json)"; fi
$C -H "$AUTH" -F "image=@$IMG;type=image/jpeg" $URL/api/v1/predictions > $T/p2.json
json 'd["cached"]' < $T/p2.json | grep -q True && ok "same image again: cached" || bad "second upload: $(cat $T/p2.json)"
HM=$(json 'd["heatmap"]' < $T/p1.json 2> /dev/null)
MID=$(json 'd["model_id"]' < $T/p1.json 2> /dev/null)
RC="redis-cli -p $PNEUMO_REDIS_PORT"
# drawn: serve's pneumo_heatmaps_rendered_total (through nginx, from loopback)
drawn() { $C $URL/metrics | awk '$1 == "pneumo_heatmaps_rendered_total" { print $2 }'; }
[ "$($RC exists pneumo:heatmap:$MID:$SHA)" = 0 ] && [ "$($RC exists pneumo:heatsrc:$MID:$SHA)" = 1 ] && [ "$(drawn)" = 0 ] &&
    ok "no heat map drawn at upload (its source in Redis)" || bad "heat map at upload: $($RC exists pneumo:heatmap:$MID:$SHA) drawn $(drawn)"
$C -H "$AUTH" -D $T/hh -o $T/heat.png "$URL$HM"
grep -qi '^content-type: image/png' $T/hh && [ "$(head -c 4 $T/heat.png | od -An -c | tr -d ' ')" = "211PNG" ] &&
    ok "heat map PNG ($(wc -c < $T/heat.png) bytes)" || bad "heat map $HM: $(head -n 1 $T/hh)"
$C -H "$AUTH" -o $T/heat2.png "$URL$HM"
cmp -s $T/heat.png $T/heat2.png && [ "$(drawn)" = 1 ] && [ "$($RC exists pneumo:heatmap:$MID:$SHA)" = 1 ] &&
    [ "$($RC exists pneumo:heatsrc:$MID:$SHA)" = 0 ] && ok "drawn once, on the first GET; the second GET is the same PNG" ||
    bad "second GET: drawn $(drawn), $(cmp $T/heat.png $T/heat2.png)"
# A second serve process on the same Redis (as PNEUMO_SERVES=2 runs behind nginx) draws a heat map
# the first one only kept the source of; the first then answers that PNG without drawing again.
IMG3=data/samples/IM-0115-0001.jpeg
SHA3=$(sha256sum $IMG3 | cut -d' ' -f1)
$C -H "$AUTH" -F "image=@$IMG3;type=image/jpeg" -o /dev/null $URL/api/v1/predictions
P2=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
MODEL=${PNEUMO_MODEL:-weights/pneumo-resnet50.safetensors}
: > $T/serve2.log
${PNEUMO:-build/pneumo} serve --model $MODEL --listen 127.0.0.1:$P2 --redis redis://127.0.0.1:$PNEUMO_REDIS_PORT/0 \
    --insecure-no-auth --quiet > $T/serve2.log 2>&1 &
s2pid=$!
i=0; until grep -q 'listening on' $T/serve2.log || [ $i -gt 600 ] || ! kill -0 $s2pid 2> /dev/null; do i=$((i+1)); sleep 0.1; done
curl -sS -o $T/heat3b.png -w '%{http_code}' http://127.0.0.1:$P2/api/v1/predictions/$SHA3/heatmap.png > $T/c
d0=$(drawn)
$C -H "$AUTH" -o $T/heat3.png "$URL/api/v1/predictions/$SHA3/heatmap.png"
[ "$(cat $T/c)" = 200 ] && cmp -s $T/heat3.png $T/heat3b.png && [ "$(drawn)" = "$d0" ] && [ "$($RC exists pneumo:heatsrc:$MID:$SHA3)" = 0 ] &&
    ok "a second serve draws it from Redis; the first serves that PNG without drawing" ||
    bad "second serve: $(cat $T/c) drawn $d0 -> $(drawn) $(cmp $T/heat3.png $T/heat3b.png) $(tail -n 2 $T/serve2.log)"
kill $s2pid; wait $s2pid 2> /dev/null; s2pid=
[ "$(code "$HM")" = 401 ] && ok "heat map needs the token" || bad "heat map without token"
$C -H "$AUTH" "$URL/api/v1/predictions?limit=5" | grep -q "$SHA" && ok "history lists it" || bad "not in the history"
[ "$(code /api/v1/predictions/$SHA -H "$AUTH")" = 200 ] && ok "GET /api/v1/predictions/{id}" || bad "GET by id"

# ---- limits and bad input ----
head -c $((21 * 1024 * 1024)) /dev/zero > $T/big.jpeg
$C -H "$AUTH" -F "image=@$T/big.jpeg;type=image/jpeg" -o $T/413 -w '%{http_code}' $URL/api/v1/predictions > $T/c
[ "$(cat $T/c)" = 413 ] && grep -q '"error"' $T/413 && ok "413 + JSON over client_max_body_size" || bad "21 MB upload: $(cat $T/c) $(head -c 200 $T/413)"
head -c 3000 $IMG > $T/trunc.jpeg
$C -H "$AUTH" -F "image=@$T/trunc.jpeg;type=image/jpeg" -o $T/bad.json -w '%{http_code}' $URL/api/v1/predictions > $T/c
[ "$(cat $T/c)" = 400 ] && grep -q '"error"' $T/bad.json && ok "truncated JPEG -> 400 $(cat $T/bad.json)" || bad "truncated: $(cat $T/c) $(cat $T/bad.json)"
printf 'GIF89a not what we take' > $T/x.gif
$C -H "$AUTH" -F "image=@$T/x.gif;type=image/gif" -o $T/bad.json -w '%{http_code}' $URL/api/v1/predictions > $T/c
[ "$(cat $T/c)" = 415 ] && grep -q '"error"' $T/bad.json && ok "GIF -> 415 $(cat $T/bad.json)" || bad "gif: $(cat $T/c) $(cat $T/bad.json)"

# ---- static files: nothing outside web/ ----
for p in /../deploy/stack.sh /%2e%2e/Makefile /web/../Makefile /..%2fMakefile /%2e%2e%2fdeploy/nginx.conf.template /.git/config /deploy/stack.sh; do
    c=$($C --path-as-is -o $T/trav -w '%{http_code}' "$URL$p")
    if { [ "$c" = 404 ] || [ "$c" = 400 ]; } && ! grep -qE 'PNEUMO_STACK_DIR|CFLAGS|repositoryformat|nginx.conf.template' $T/trav
    then ok "traversal $p -> $c"; else bad "traversal $p -> $c: $(head -c 200 $T/trav)"; fi
done

# ---- /metrics from loopback only ----
$C $URL/metrics > $T/metrics && grep -q '^# \(TYPE\|HELP\)' $T/metrics && ok "/metrics from 127.0.0.1" || bad "/metrics: $(head -n 3 $T/metrics)"
c=$(code /metrics --interface 127.0.0.2 2> /dev/null)
[ "$c" = 403 ] && ok "/metrics from 127.0.0.2 -> 403" || bad "/metrics from 127.0.0.2 -> $c"

# ---- Redis down: not ready, predictions still answered; back up: ready again ----
[ "$(code /readyz)" = 200 ] && ok "/readyz 200" || bad "/readyz not 200"
redis-cli -p $PNEUMO_REDIS_PORT shutdown nosave > /dev/null 2>&1
i=0; while [ "$(code /readyz)" != 503 ] && [ $i -lt 50 ]; do i=$((i+1)); sleep 0.1; done
[ "$(code /readyz)" = 503 ] && ok "Redis stopped -> /readyz 503" || bad "/readyz with Redis down: $(code /readyz)"
$C -H "$AUTH" -F "image=@$IMG2;type=image/jpeg" -o $T/p3.json -w '%{http_code}' $URL/api/v1/predictions > $T/c
[ "$(cat $T/c)" = 200 ] && json 'd["cached"]' < $T/p3.json | grep -q False && ok "prediction without Redis (cached false)" || bad "without Redis: $(cat $T/c) $(cat $T/p3.json)"
deploy/stack.sh status > /dev/null 2>&1; [ $? -eq 3 ] && ok "status says a service is down (exit 3)" || bad "status with Redis down"
deploy/stack.sh up > $T/up3 2>&1 && grep -q "^redis .*up" $T/up3 && ok "up restarts only Redis" || bad "up after Redis stop: $(cat $T/up3)"
i=0; while [ "$(code /readyz)" != 200 ] && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.1; done
[ "$(code /readyz)" = 200 ] && ok "Redis back -> /readyz 200" || bad "/readyz after Redis restart: $(code /readyz)"
PIDS="$PIDS $(cat $SDIR/redis.pid)"

# ---- serve down: 502 as JSON; up starts it again ----
kill "$(cat $SDIR/serve1.pid)"; i=0
while [ "$(code /healthz)" != 502 ] && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.1; done
$C -H "$AUTH" -o $T/502 -w '%{http_code}' "$URL/api/v1/predictions?limit=1" > $T/c
[ "$(cat $T/c)" = 502 ] && grep -q '"error"' $T/502 && ok "serve stopped -> 502 + JSON" || bad "serve stopped: $(cat $T/c) $(head -c 200 $T/502)"
deploy/stack.sh up > $T/up4 2>&1 && grep -q "^serve1 .*up" $T/up4 && [ "$(code /api/v1/predictions?limit=1 -H "$AUTH")" = 200 ] &&
    ok "up restarts serve" || bad "up after serve stop: $(cat $T/up4)"
PIDS="$PIDS $(cat $SDIR/serve1.pid)"
sleep 2   # the rate limiter's bucket drains

# ---- rate limit: past rate + burst -> 429 ----
i=0; while [ $i -lt 60 ]; do printf 'url = "%s"\noutput = "/dev/null"\n' "$URL/api/v1/predictions?limit=1"; i=$((i+1)); done > $T/many
$C -H "$AUTH" -w '%{http_code}\n' -K $T/many > $T/codes
$C -H "$AUTH" -D $T/429h -o $T/429 $URL/api/v1/predictions?limit=1
grep -q '"error":"too many' $T/429 && ok "429 answered as JSON" || bad "429 body: $(head -c 200 $T/429)"
grep -qi '^retry-after: 1' $T/429h && grep -qi '^strict-transport-security' $T/429h && ok "429 has Retry-After and the security headers" || bad "429 headers: $(tr '\r\n' '  ' < $T/429h)"
$C -H "$AUTH" -D $T/200h -o /dev/null $URL/healthz
grep -qi '^retry-after' $T/200h && bad "Retry-After on a 200" || ok "no Retry-After on a 200"
n429=$(grep -cx 429 $T/codes); n200=$(grep -cx 200 $T/codes)
[ $n429 -gt 0 ] && [ $n200 -ge 20 ] && ok "rate limit: $n200 x 200 then $n429 x 429" || bad "rate limit: $(sort $T/codes | uniq -c | tr '\n' ' ')"

# ---- down ----
deploy/stack.sh down > $T/down 2>&1
left=""; for p in $PIDS; do kill -0 $p 2> /dev/null && left="$left $p"; done
pgrep -af "$SDIR" > $T/left && left="$left $(cat $T/left)"
[ -z "$left" ] && ok "down: none of the stack's processes left" || bad "still running after down:$left"
deploy/stack.sh status > /dev/null 2>&1; [ $? -eq 3 ] && ok "status after down: exit 3" || bad "status after down"
finish stack
