# lib.sh: shared by the shell tests (sourced, not run): a temporary folder $T removed at exit,
# check counters, and the helpers
#   ok MSG / bad MSG                  record a check that passed / failed
#   expect CODE PATTERN -- CMD...      run CMD; pass when it exits CODE and its stdout+stderr
#                                      match the extended regex PATTERN
#   finish NAME                        print the summary line and return the exit status
# A script that starts servers sets $spid; it is killed at exit.
P=${PNEUMO:-build/pneumo}
T=$(mktemp -d); spid=
trap '[ -n "$spid" ] && kill $spid 2>/dev/null; rm -rf "$T"' EXIT
fails=0; n=0
ok()  { n=$((n+1)); echo "ok   $*"; }
bad() { n=$((n+1)); fails=$((fails+1)); echo "FAIL $*"; }
expect() {
    code=$1; pat=$2; shift 3; n=$((n+1))
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" != "$code" ] || ! printf '%s' "$out" | grep -qE -- "$pat"; then
        fails=$((fails+1)); echo "FAIL: $* -> exit $rc (want $code):"; printf '%s\n' "$out" | tail -5 | sed 's/^/    /'
    else echo "ok   $*"; fi
}
finish() {
    echo "$1: $n checks, $fails failed"
    [ $fails -eq 0 ]
}
# s3_start BUCKET: starts the local S3 server (tests/s3rver.js, @20minutes/s3rver) on a free
# loopback port with BUCKET, points the AWS variables at it (AWS_ENDPOINT_URL_S3, keys S3RVER)
# and sets $spid. Returns 1 after printing "SKIP part" when node, the npm package or awscli is
# missing; a server that does not come up is a failed check (and returns 1).
s3_start() {
    if ! command -v node > /dev/null || [ ! -f node_modules/@20minutes/s3rver/package.json ] ||
       ! command -v aws > /dev/null || ! aws --version > /dev/null 2>&1; then
        echo "SKIP part: S3 (needs node, node_modules/@20minutes/s3rver and awscli)"
        return 1
    fi
    mkdir -p $T/s3
    node --openssl-legacy-provider tests/s3rver.js $T/s3 $T/s3port "$1" > $T/s3rver.log 2>&1 &
    spid=$!
    i=0
    while [ ! -s $T/s3port ] && [ $i -lt 150 ] && kill -0 $spid 2> /dev/null; do i=$((i+1)); sleep 0.1; done
    for v in AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_MAX_ATTEMPTS \
             AWS_IGNORE_CONFIGURED_ENDPOINT_URLS; do unset $v; done
    export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
    export AWS_ENDPOINT_URL_S3="http://127.0.0.1:$(cat $T/s3port 2> /dev/null)"
    export AWS_CONFIG_FILE=$T/no-config AWS_SHARED_CREDENTIALS_FILE=$T/no-credentials
    export AWS_EC2_METADATA_DISABLED=true AWS_REQUEST_CHECKSUM_CALCULATION=when_required
    [ -s $T/s3port ] && return 0
    bad "s3rver did not start: $(tail -n 3 $T/s3rver.log)"
    return 1
}
# s3_seed DIR S3URI: uploads DIR recursively with the Debian awscli (a second, independent client).
s3_seed() {
    aws --endpoint-url $AWS_ENDPOINT_URL_S3 s3 cp --recursive --only-show-errors "$1" "$2" && return 0
    bad "awscli could not seed $2: $(tail -n 3 $T/s3rver.log)"
    return 1
}
s3_stop() {
    [ -n "$spid" ] || return 0 # a bare `wait` would wait for every child (redis-server too)
    kill $spid 2> /dev/null; wait $spid 2> /dev/null; spid=
}
# stack_need: exits 77 (SKIP, with the reason) when deploy/stack.sh's programs are missing.
stack_need() {
    for c in redis-server redis-cli nginx openssl curl python3 "$@"; do
        command -v $c > /dev/null || { echo "SKIP $c not installed (./scripts/install-deps.sh)"; exit 77; }
    done
}
# stack_up: deploy/stack.sh up in $T/stack on free loopback ports (more PNEUMO_* settings may be
# exported by the caller). Sets $SDIR, $URL (https://127.0.0.1:PORT), $CA, $TOKEN and the
# PNEUMO_*_PORT variables; returns 1 after printing the log when the stack does not come up.
# stack_down stops it (call it from the EXIT trap).
stack_up() {
    SDIR=$T/stack
    # Five distinct free ports: all five sockets are bound at once.
    ports=$(python3 -c 'import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
    set -- $ports
    PNEUMO_STACK_DIR=$SDIR PNEUMO_HTTPS_PORT=$1 PNEUMO_HTTP_PORT=$2 PNEUMO_SERVE_PORT=$3 \
        PNEUMO_REDIS_PORT=$4 PNEUMO_S3_PORT=$5
    export PNEUMO_STACK_DIR PNEUMO_HTTPS_PORT PNEUMO_HTTP_PORT PNEUMO_SERVE_PORT PNEUMO_REDIS_PORT \
        PNEUMO_S3_PORT
    if ! deploy/stack.sh up > $T/stack-up.log 2>&1; then
        echo "deploy/stack.sh up failed:"; sed 's/^/    /' $T/stack-up.log
        for f in $SDIR/*.log $SDIR/nginx/logs/error.log; do [ -f "$f" ] && { echo "== $f"; tail -n 5 "$f"; }; done
        return 1
    fi
    URL=https://127.0.0.1:$PNEUMO_HTTPS_PORT; CA=$SDIR/tls/ca.crt; TOKEN=$(cat $SDIR/token)
}
stack_down() { [ -n "${SDIR:-}" ] && [ -d "$SDIR" ] && deploy/stack.sh down > /dev/null 2>&1; }
