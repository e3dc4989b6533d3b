#!/bin/sh
# Filter for bench/RESULTS.md sections (stdin -> stdout): each "Raw output" block (the plain
# form, or the <details> one bench/run.sh writes) becomes one line that points at the history.
awk '
    /^Raw output:$/ || /^<details><summary>Raw output/ { skip = 1; fence = 0; details = /^<details>/; next }
    skip && /^```$/ { fence++; if (fence == 2 && !details) { skip = 0; print "Raw output: in the git history of this file (`git log -p bench/RESULTS.md`)." } ; next }
    skip && details && /^<\/details>$/ { skip = 0; print "Raw output: in the git history of this file (`git log -p bench/RESULTS.md`)."; next }
    skip { next }
    { print }
'
