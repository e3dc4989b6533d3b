#!/bin/sh
# A/B of two pneumo builds on one benchmark: runs `A bench ARGS` and `B bench ARGS` alternately,
# ROUNDS rounds each (5), and prints per case (a conv shape and pass, a GEMM shape, the model)
# each side's ms sorted, the ratio of the medians (B / A: below 1, B is faster) and in how many
# rounds B beat A. On a shared VM the speed drifts by 10-50 % over minutes, so two builds are only
# comparable run by run like this, never from runs minutes apart. Usage:
#   sh bench/ab.sh [-r ROUNDS] A B -- ARGS...
# e.g. a second build with a tunable changed, then its convolutions' weight gradients:
#   make BUILD=build-b CFLAGS="-O2 -g -DNK_AVX512_MR=12 -DNK_AVX512_NV=2" build-b/pneumo
#   sh bench/ab.sh build/pneumo build-b/pneumo -- conv --pass bwd-filter --repeat 5 --no-check
# The model's case compares median steps (ms=).
set -e
R=5
if [ "$1" = -r ]; then R=$2; shift 2; fi
case "$R" in '' | *[!0-9]* | 0) echo "ab.sh: -r expects a round count >= 1, got \"$R\"" >&2; exit 2 ;; esac
if [ $# -lt 3 ] || [ "$3" != -- ]; then
    echo "usage: sh bench/ab.sh [-r ROUNDS] A B -- ARGS... (ARGS: what follows \`pneumo bench\`)" >&2
    exit 2
fi
A=$1; B=$2; shift 3
for p in "$A" "$B"; do
    [ -x "$p" ] || { echo "ab.sh: expected an executable pneumo, got \"$p\"" >&2; exit 2; }
done
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
i=0
while [ $i -lt "$R" ]; do
    for side in A B; do
        [ $side = A ] && p=$A || p=$B
        # One line per case: "side key ms". Keys: name=..+pass= (conv), MxNxK (gemm), model.
        "$p" bench "$@" 2>&1 | awk -v side=$side '
            /^op=(conv|sgemm|model) / {
                key = ""; ms = ""
                for (f = 2; f <= NF; f++) {
                    split($f, kv, "=")
                    if (kv[1] == "name" || kv[1] == "pass" || kv[1] == "M" || kv[1] == "N" ||
                        kv[1] == "K" || kv[1] == "mode" || kv[1] == "dtype")
                        key = key (key == "" ? "" : ",") $f
                    if (kv[1] == "ms") ms = kv[2]
                }
                if (ms != "") print side, $1 "," key, ms
            }' >> "$OUT" || true
    done
    i=$((i + 1))
done
if ! [ -s "$OUT" ]; then
    echo "ab.sh: no op= lines with ms= came back from \`bench $*\`" >&2
    exit 1
fi
awk '
    # Sorts the numbers of string s into a[1..n]; returns n.
    function sortnum(s, a,    n, i, j, t) {
        n = split(s, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n
    }
    function median(a, n) { return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    function joined(a, n,    i, r) { r = a[1]; for (i = 2; i <= n; i++) r = r " " a[i]; return r }
    {
        if (!($2 in seen)) { seen[$2] = 1; order[++nk] = $2 }
        v[$1, $2] = v[$1, $2] " " $3
        cnt[$1, $2]++
        if ($1 == "A") last[$2] = $3
        else if (last[$2] != "") { rounds[$2]++; if ($3 + 0 < last[$2] + 0) wins[$2]++; last[$2] = "" }
    }
    END {
        for (k = 1; k <= nk; k++) {
            key = order[k]
            if (!cnt["A", key] || !cnt["B", key]) { printf "%s\n  only %s printed it\n", key, cnt["A", key] ? "A" : "B"; continue }
            na = sortnum(v["A", key], sa); nb = sortnum(v["B", key], sb)
            ma = median(sa, na); mb = median(sb, nb)
            printf "%s\n  A ms: %s\n  B ms: %s\n  B/A %.3f (medians %.3f / %.3f), B faster in %d of %d rounds\n",
                   key, joined(sa, na), joined(sb, nb), mb / ma, mb, ma, wins[key], rounds[key]
        }
    }' "$OUT"
