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
