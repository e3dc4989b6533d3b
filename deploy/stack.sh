#!/bin/sh
# stack.sh: the local pneumo stack on loopback, without root:
#   redis-server -> pneumo serve (shipped model, tokens file) -> nginx (TLS, deploy/nginx.conf.template)
# plus the local S3 test server (@20minutes/s3rver from node_modules) for `pneumo predict s3://`.
#   deploy/stack.sh up       start what is not running (idempotent), wait until each is ready,
#                            print the page's URL, the CA certificate and a token
#   deploy/stack.sh down     stop only what `up` started (pid files in the state folder)
#   deploy/stack.sh status   one line per service; exit 0 when all are up, 3 otherwise
# State, logs, certificates and the tokens file live in $PNEUMO_STACK_DIR (./run/stack).
# Ports and options come from the environment (defaults below); `up` records them in
# STATE/stack.env, which later calls read. Tested by tests/stack.sh.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
DIR=${PNEUMO_STACK_DIR:-run/stack}
mkdir -p "$DIR" || exit 1
DIR=$(cd "$DIR" && pwd)

# Settings: the environment (PNEUMO_*) over what an earlier `up` recorded over the defaults.
SETTINGS="HTTPS_PORT HTTP_PORT SERVE_PORT SERVES REDIS_PORT S3_PORT MODEL MAX_BODY API_RATE API_BURST SERVE_ARGS"
# shellcheck disable=SC1091
[ -f "$DIR/stack.env" ] && . "$DIR/stack.env"
setting() { eval "$1=\${PNEUMO_$1:-\${saved_$1:-\$2}}"; }
setting HTTPS_PORT 8443
setting HTTP_PORT 8080
setting SERVE_PORT 8081    # the first serve; more (PNEUMO_SERVES) take the next ports
setting SERVES 1
setting REDIS_PORT 6390
setting S3_PORT 4569
setting MODEL weights/pneumo-resnet50.safetensors
setting MAX_BODY 20m       # nginx's client_max_body_size and serve's --max-bytes
setting API_RATE 10r/s     # per client address, on /api/
setting API_BURST 20
setting SERVE_ARGS ""      # more `pneumo serve` flags
save_env() { for v in $SETTINGS; do eval "printf \"saved_%s='%s'\\n\" \$v \"\$$v\""; done; }
PNEUMO=${PNEUMO:-build/pneumo}
HOST=127.0.0.1
URL="https://$HOST:$HTTPS_PORT/"

say() { printf '%s\n' "$*"; }
die() { printf 'stack.sh: %s\n' "$*" >&2; exit 1; }

# ---- processes ----

# alive NAME: the process in NAME.pid runs and is still the program we started (a reused pid
# of another program does not count).
alive() {
    [ -f "$DIR/$1.pid" ] || return 1
    pid=$(cat "$DIR/$1.pid" 2> /dev/null)
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    kill -0 "$pid" 2> /dev/null || return 1
    case "$1" in serve*) want=pneumo ;; s3) want=node ;; redis) want=redis ;; *) want=$1 ;; esac
    tr '\0' ' ' < "/proc/$pid/cmdline" 2> /dev/null | grep -q "$want"
}

# wait_for NAME SECONDS CMD...: polls CMD until it succeeds; fails when NAME's process died.
wait_for() {
    name=$1; secs=$2; shift 2; i=0
    pid=$(cat "$DIR/$name.pid")
    while ! "$@" > /dev/null 2>&1; do
        # kill -0 only: just after the fork, the child may not have exec'd its program yet.
        kill -0 "$pid" 2> /dev/null || { say "$name exited; the end of $DIR/$name.log:"; tail -n 5 "$DIR/$name.log"; return 1; }
        i=$((i + 1)); [ $i -gt $((secs * 10)) ] && { say "$name not ready after ${secs}s (see $DIR/$name.log)"; return 1; }
        sleep 0.1
    done
}

stop() {
    alive "$1" || { rm -f "$DIR/$1.pid"; return 0; }
    kill "$pid" 2> /dev/null
    i=0
    while kill -0 "$pid" 2> /dev/null && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.1; done
    kill -0 "$pid" 2> /dev/null && kill -9 "$pid" 2> /dev/null
    rm -f "$DIR/$1.pid"
    say "stopped $1 (pid $pid)"
}

serve_names() { i=0; while [ $i -lt "$SERVES" ]; do printf 'serve%s ' $((i + 1)); i=$((i + 1)); done; }

# ---- certificates and configuration ----

# A local CA and a server certificate for 127.0.0.1 and localhost signed by it, so that clients
# trust the CA (curl --cacert STATE/tls/ca.crt) instead of skipping verification.
make_certs() {
    t=$DIR/tls
    [ -s "$t/server.crt" ] && [ -s "$t/ca.crt" ] && [ -s "$t/dhparam.pem" ] && return 0
    mkdir -p "$t" && chmod 700 "$t"
    (
        set -e
        cd "$t"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
            -subj "/CN=pneumo local CA" -keyout ca.key -out ca.crt \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "/CN=localhost" -keyout server.key -out server.csr
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" > server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
            -extfile server.ext -out server.crt
        # RFC 7919's ffdhe2048 group, as Mozilla's intermediate configuration recommends.
        openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 -out dhparam.pem
        rm -f server.csr server.ext ca.srl
    ) > "$DIR/openssl.log" 2>&1 || die "openssl failed: $(tail -n 3 "$DIR/openssl.log")"
    say "made a local CA ($t/ca.crt) and a certificate for 127.0.0.1 and localhost"
}

write_nginx_conf() {
    mkdir -p "$DIR/nginx/logs" "$DIR/nginx/temp"
    ups=""; i=0
    while [ $i -lt "$SERVES" ]; do
        ups="$ups        server $HOST:$((SERVE_PORT + i)) max_fails=1 fail_timeout=5s;\\n"
        i=$((i + 1))
    done
    # Workers run as whoever runs the stack: as root nginx would otherwise switch to `nobody`,
    # who cannot enter a private state folder. A real deployment uses a dedicated user.
    user=""
    [ "$(id -u)" -eq 0 ] && user="user $(id -un) $(id -gn);"
    sed -e "s|@USER_LINE@|$user|" -e "s|@HOST@|$HOST|g" -e "s|@HTTP_PORT@|$HTTP_PORT|g" \
        -e "s|@HTTPS_PORT@|$HTTPS_PORT|g" -e "s|@MAX_BODY@|$MAX_BODY|" \
        -e "s|@API_RATE@|$API_RATE|" -e "s|@API_BURST@|$API_BURST|" \
        -e "s|@UPSTREAM_SERVERS@|$ups|" -e "s|@CERT@|$DIR/tls/server.crt|" \
        -e "s|@KEY@|$DIR/tls/server.key|" -e "s|@DHPARAM@|$DIR/tls/dhparam.pem|" \
        -e "s|@WEB@|$ROOT/web|" deploy/nginx.conf.template > "$DIR/nginx/nginx.conf.tmp" &&
        mv "$DIR/nginx/nginx.conf.tmp" "$DIR/nginx/nginx.conf"
}

# 20m -> 20971520 for serve's --max-bytes.
bytes() {
    case "$1" in
        *[kK]) echo $((${1%?} * 1024)) ;;
        *[mM]) echo $((${1%?} * 1024 * 1024)) ;;
        *[gG]) echo $((${1%?} * 1024 * 1024 * 1024)) ;;
        *) echo "$1" ;;
    esac
}

# ---- the services ----

start_redis() {
    alive redis && return 0
    mkdir -p "$DIR/redis"
    redis-server --port "$REDIS_PORT" --bind $HOST --dir "$DIR/redis" --save 300 1 \
        --appendonly no --daemonize no < /dev/null > "$DIR/redis.log" 2>&1 &
    echo $! > "$DIR/redis.pid"
    wait_for redis 10 redis-cli -h $HOST -p "$REDIS_PORT" ping && say "redis   up  $HOST:$REDIS_PORT"
}

start_s3() {
    alive s3 && return 0
    command -v node > /dev/null && [ -f node_modules/@20minutes/s3rver/package.json ] || {
        say "s3      skipped (needs node and node_modules: ./scripts/install-deps.sh)"
        return 0
    }
    mkdir -p "$DIR/s3"
    rm -f "$DIR/s3.port"
    S3RVER_PORT=$S3_PORT node --openssl-legacy-provider tests/s3rver.js "$DIR/s3" "$DIR/s3.port" xrays \
        < /dev/null > "$DIR/s3.log" 2>&1 &
    echo $! > "$DIR/s3.pid"
    wait_for s3 20 test -s "$DIR/s3.port" && say "s3      up  http://$HOST:$S3_PORT (bucket xrays)"
}

start_serve() {
    name=$1; port=$2
    alive "$name" && return 0
    # shellcheck disable=SC2086
    "$PNEUMO" serve --model "$MODEL" --listen "$HOST:$port" --redis "redis://$HOST:$REDIS_PORT/0" \
        --tokens "$DIR/tokens" --max-bytes "$(bytes "$MAX_BODY")" --quiet $SERVE_ARGS \
        < /dev/null > "$DIR/$name.log" 2>&1 &
    echo $! > "$DIR/$name.pid"
    wait_for "$name" 120 curl -fsS "http://$HOST:$port/healthz" && say "$name  up  http://$HOST:$port"
}

start_nginx() {
    alive nginx && return 0
    write_nginx_conf
    nginx -t -q -p "$DIR/nginx/" -c "$DIR/nginx/nginx.conf" -e "$DIR/nginx/logs/error.log" \
        > "$DIR/nginx.log" 2>&1 || die "nginx configuration: $(tail -n 3 "$DIR/nginx.log")"
    # nginx forks into the background and writes its own pid file; ours points at it.
    nginx -p "$DIR/nginx/" -c "$DIR/nginx/nginx.conf" -e "$DIR/nginx/logs/error.log" \
        < /dev/null >> "$DIR/nginx.log" 2>&1 || die "nginx: $(tail -n 3 "$DIR/nginx/logs/error.log")"
    i=0
    until [ -s "$DIR/nginx/logs/nginx.pid" ] || [ $i -gt 50 ]; do i=$((i + 1)); sleep 0.1; done
    cp "$DIR/nginx/logs/nginx.pid" "$DIR/nginx.pid" 2> /dev/null
    wait_for nginx 10 curl -fsS --cacert "$DIR/tls/ca.crt" "${URL}healthz" && say "nginx   up  $URL (HTTP $HOST:$HTTP_PORT redirects)"
}

token() {
    [ -s "$DIR/token" ] && return 0
    umask 077
    "$PNEUMO" token add doctor --tokens "$DIR/tokens" > "$DIR/token.tmp" 2> "$DIR/token.log" &&
        mv "$DIR/token.tmp" "$DIR/token" || die "pneumo token add: $(tail -n 3 "$DIR/token.log")"
}

up() {
    for c in redis-server redis-cli nginx openssl curl; do
        command -v $c > /dev/null || die "$c is not installed (./scripts/install-deps.sh)"
    done
    [ -x "$PNEUMO" ] || { say "building $PNEUMO (make -j2)"; make -j2 > "$DIR/make.log" 2>&1 ||
        die "make failed: see $DIR/make.log"; }
    [ -f "$MODEL" ] || die "no model at $MODEL (set PNEUMO_MODEL)"
    all=1
    for s in redis s3 $(serve_names) nginx; do alive "$s" || all=; done
    [ -n "$all" ] && say "the stack is already up"
    save_env > "$DIR/stack.env"
    make_certs
    token
    start_redis || exit 1
    start_s3 || exit 1
    for s in $(serve_names); do start_serve "$s" $((SERVE_PORT + ${s#serve} - 1)) || exit 1; done
    start_nginx || exit 1
    say "page:  $URL"
    say "CA:    $DIR/tls/ca.crt   (curl --cacert $DIR/tls/ca.crt ${URL}healthz)"
    say "token: $(cat "$DIR/token")"
}

down() {
    for s in nginx $(serve_names) s3 redis; do stop "$s"; done
    rm -f "$DIR/nginx/logs/nginx.pid" "$DIR/s3.port"
}

status() {
    rc=0
    for s in redis s3 $(serve_names) nginx; do
        if alive "$s"; then printf '%-7s up    pid %s\n' "$s" "$pid"
        else printf '%-7s down\n' "$s"; rc=3; fi
    done
    [ $rc -eq 0 ] && say "page: $URL  CA: $DIR/tls/ca.crt"
    return $rc
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) say "usage: deploy/stack.sh up|down|status   (state in \$PNEUMO_STACK_DIR, default run/stack)" >&2; exit 2 ;;
esac
