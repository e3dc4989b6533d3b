#!/bin/sh
# Installs what pneumo needs on Debian 12 to build and run its tests (and, with --bench, the
# peers the benchmarks compare against: OpenBLAS and PyTorch). Safe to run again.
set -e
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
PKGS="build-essential pkg-config python3 libhdf5-dev libjansson-dev libpng-dev libturbojpeg0-dev libjpeg62-turbo-dev libcurl4-openssl-dev libexpat1-dev"
[ "${1:-}" = "--bench" ] && PKGS="$PKGS libopenblas-dev python3-torch"
missing=
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
