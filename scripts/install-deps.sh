#!/bin/sh
# Installs what pneumo needs on Debian 12 to build and run its tests (and, with --bench, the
# peers the benchmarks compare against: OpenBLAS, oneDNN and PyTorch), then the test-only npm packages
# pinned in package-lock.json (the local S3 server of tests/s3.sh). Safe to run again.
set -e
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# libssl-dev: libcrypto's SHA-256 for signed S3 uploads and image hashes; awscli and node:
# tests/s3.sh; libhiredis-dev: predict's Redis results; redis-server: tests/predict.sh;
# libmicrohttpd-dev: pneumo serve; nginx, openssl: deploy/stack.sh (TLS in front of serve);
# chromium: the page's browser test (driven by npm playwright-core); wrk: the serve load bench.
PKGS="build-essential pkg-config python3 libhdf5-dev libjansson-dev libpng-dev libturbojpeg0-dev libjpeg62-turbo-dev libcurl4-openssl-dev libexpat1-dev libssl-dev libhiredis-dev libmicrohttpd-dev redis-server awscli nginx openssl curl chromium wrk"
[ "${1:-}" = "--bench" ] && PKGS="$PKGS libopenblas-dev libdnnl-dev python3-torch"
# A node already on PATH (NodeSource's package, nvm) is kept.
command -v node >/dev/null 2>&1 || PKGS="$PKGS nodejs"
updated=
apt_install() {
    echo "installing: $*"
    [ -n "$updated" ] || $SUDO apt-get update -qq
    updated=1
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}
missing=
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] || apt_install $missing
# Debian's nodejs comes without npm; NodeSource's bundles it, and Debian's npm package conflicts
# with that one: so npm only when there is still none after nodejs is in.
command -v npm >/dev/null 2>&1 || apt_install npm
# The npm packages exactly as locked, when node_modules is missing or older than the lock file.
lock="$ROOT/node_modules/.package-lock.json"
if [ -f "$ROOT/package-lock.json" ] && { [ ! -f "$lock" ] ||
    [ "$ROOT/package-lock.json" -nt "$lock" ] || [ "$ROOT/package.json" -nt "$lock" ]; }; then
    echo "npm ci (package-lock.json)"
    (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error)
fi
