#!/bin/sh
# Runs each test binary given as an argument (and tests/*.sh scripts), then prints the summary
# line `N passed, N failed, N skipped`. Exit status 77 from a test means SKIP. Logs go to
# $BUILD/tests/*.log; a failing test's log tail is printed.
BUILD=${BUILD:-build}
pass=0; fail=0; skip=0; failed=""
run_one() {
    name=$1; shift; log="$BUILD/tests/$name.log"
    start=$(date +%s)
    "$@" > "$log" 2>&1; rc=$?
    t=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ]; then pass=$((pass+1)); echo "PASS $name (${t}s)"
    elif [ $rc -eq 77 ]; then skip=$((skip+1)); echo "SKIP $name: $(grep -m1 '^SKIP' "$log" | cut -c6-)"
    else fail=$((fail+1)); failed="$failed $name"; echo "FAIL $name (exit $rc, ${t}s)"; tail -n 25 "$log" | sed 's/^/    /'
    fi
}
for t in "$@"; do run_one "$(basename "$t")" "$t"; done
for s in tests/*.sh; do
    case "$s" in tests/run.sh|tests/lib.sh) continue ;; esac
    [ -f "$s" ] || continue
    run_one "$(basename "$s" .sh)" sh "$s"
done
[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
