#!/bin/sh
# s3.sh: the S3 client against a real, signature-checking S3 server on loopback: starts
# @20minutes/s3rver (tests/s3rver.js, pinned in package.json) on a free port, seeds a bucket with
# awscli as a second, independent client, runs $BUILD/tests/test_s3 (which also stops and then
# kills the server in the middle of a listing), restarts the server on the same data and reads
# back with awscli what pneumo wrote. SKIP (77) when node or the npm packages are missing
# (`npm ci` in the repository root installs them; scripts/install-deps.sh does).
cd "$(dirname "$0")/.." || exit 1
BUILD=${BUILD:-build}
T=$(mktemp -d /tmp/pneumo_s3sh_XXXXXX)
pid=
stop_server() {
    if [ -n "$pid" ]; then
        kill -CONT "$pid" 2>/dev/null; kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    fi
    pid=
}
trap 'stop_server; rm -rf "$T"' EXIT
trap 'exit 130' INT TERM

if ! command -v node >/dev/null 2>&1; then
    echo "SKIP node not found (scripts/install-deps.sh installs nodejs)"; exit 77
fi
if [ ! -f node_modules/@20minutes/s3rver/package.json ]; then
    echo "SKIP node_modules/@20minutes/s3rver missing (run: npm ci --no-audit --no-fund)"; exit 77
fi
[ -x "$BUILD/tests/test_s3" ] || { echo "FAIL: $BUILD/tests/test_s3 not built"; exit 1; }

BUCKET=pneumo-test
SEEDED=seeded
# start_server: s3rver on 127.0.0.1 and a port the kernel picks; sets pid and port.
start_server() {
    rm -f "$T/port"
    node --openssl-legacy-provider tests/s3rver.js "$T/data" "$T/port" $BUCKET $SEEDED \
        >> "$T/s3rver.log" 2>&1 &
    pid=$!
    i=0
    while [ ! -s "$T/port" ]; do
        i=$((i + 1))
        if [ $i -gt 150 ] || ! kill -0 "$pid" 2>/dev/null; then
            echo "FAIL: s3rver did not start within 15 s:"; sed 's/^/    /' "$T/s3rver.log"; exit 1
        fi
        sleep 0.1
    done
    port=$(cat "$T/port")
}
start_server
echo "s3rver (node $(node --version)) on 127.0.0.1:$port, pid $pid"

# Only this test's settings: none of the machine's AWS configuration.
for v in AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_MAX_ATTEMPTS \
         AWS_IGNORE_CONFIGURED_ENDPOINT_URLS; do unset $v; done
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER     # s3rver's default account
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL_S3="http://127.0.0.1:$port"
export AWS_CONFIG_FILE="$T/no-config" AWS_SHARED_CREDENTIALS_FILE="$T/no-credentials"
export AWS_EC2_METADATA_DISABLED=true AWS_REQUEST_CHECKSUM_CALCULATION=when_required
export S3_TEST_BUCKET=$BUCKET

# The keys of SPECIAL_KEYS in tests/test_s3.c; each object holds its own key.
KEYS="$T/keys"
cat > "$KEYS" <<'EOF'
plain.txt
with space/file name.png
plus+sign/a+b=c.jpeg
equals=sign/x=1&y=2.txt
unicode/ünïcødé ✓ 肺炎.png
nested/a/b/c/d/e.txt
punct/tilde~star*paren(1)!quote'semi;colon:at@comma,dollar$.txt
pct/100%25 literal %2F.txt
hash#and?question.txt
EOF
fails=0
# Debian's awscli (scripts/install-deps.sh) first, else whichever aws is on PATH.
AWSCLI=/usr/bin/aws
[ -x $AWSCLI ] || AWSCLI=$(command -v aws 2>/dev/null)
AWS="$AWSCLI --endpoint-url $AWS_ENDPOINT_URL_S3"
if [ -n "$AWSCLI" ] && $AWSCLI --version >/dev/null 2>&1; then
    echo "seeding s3://$SEEDED with $($AWSCLI --version 2>&1 | cut -d' ' -f1)"
    mkdir -p "$T/seed"
    # All but the last key through `aws s3 cp --recursive`, the last through `aws s3api`.
    last=$(tail -n 1 "$KEYS")
    while IFS= read -r k; do
        [ "$k" = "$last" ] && continue
        mkdir -p "$T/seed/$(dirname "$k")"
        printf '%s' "$k" > "$T/seed/$k"
    done < "$KEYS"
    printf '%s' "$last" > "$T/last"
    if $AWS s3 cp --recursive --only-show-errors "$T/seed" "s3://$SEEDED/" &&
       $AWS s3api put-object --bucket $SEEDED --key "$last" --body "$T/last" > /dev/null; then
        export S3_TEST_SEEDED_BUCKET=$SEEDED
    else
        echo "FAIL: awscli could not seed s3://$SEEDED"; fails=$((fails + 1))
    fi
else
    echo "aws (awscli) not found: seeding with a second client and the read-back are skipped"
    AWS=
fi

S3RVER_PID=$pid "$BUILD/tests/test_s3"; rc=$?
[ $rc -eq 0 ] || { echo "FAIL: test_s3 exited $rc"; fails=$((fails + 1)); }
stop_server # test_s3 killed it; reap it

if [ -n "$AWS" ]; then
    # What pneumo wrote, read by the other client from the same data, served anew.
    start_server
    export AWS_ENDPOINT_URL_S3="http://127.0.0.1:$port"
    AWS="$AWSCLI --endpoint-url $AWS_ENDPOINT_URL_S3"
    got=$($AWS s3 cp "s3://$BUCKET/roundtrip/ünï cødé+=.txt" - 2>&1)
    if [ "$got" = "written by pneumo" ]; then echo "ok   awscli reads what pneumo wrote"
    else echo "FAIL: awscli read back: $got"; fails=$((fails + 1)); fi
    while IFS= read -r k; do
        got=$($AWS s3 cp "s3://$BUCKET/$k" - 2>&1)
        [ "$got" = "$k" ] || { echo "FAIL: awscli read s3://$BUCKET/$k: $got"; fails=$((fails + 1)); }
    done < "$KEYS"
    n=$($AWS s3 ls --recursive "s3://$BUCKET/many/" | wc -l)
    if [ "$n" -eq 1100 ]; then echo "ok   awscli lists the 1100 objects pneumo wrote"
    else echo "FAIL: awscli lists $n objects under many/, want 1100"; fails=$((fails + 1)); fi
fi
[ $fails -eq 0 ] && echo "s3.sh: all passed" || echo "s3.sh: $fails failed"
[ $fails -eq 0 ]
