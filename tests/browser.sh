#!/bin/sh
# The doctor's page in a real headless Chromium (tests/browser.mjs, playwright-core driving
# Debian's /usr/bin/chromium) against the real stack: nginx with TLS, `pneumo serve` with the
# shipped model, Redis. Screenshots go to tests/artifacts/ (signin.png, page.png, page-tablet.png).
. tests/lib.sh
stack_need node
[ -f node_modules/playwright-core/package.json ] || { echo "SKIP node_modules/playwright-core missing (./scripts/install-deps.sh)"; exit 77; }
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] || { echo "SKIP $CHROMIUM not installed (./scripts/install-deps.sh)"; exit 77; }
export CHROMIUM
trap 'stack_down; rm -rf "$T"' EXIT
stack_up || exit 1
ok "stack up at $URL"
mkdir -p tests/artifacts
IMG=../shared/data/chest_xray/val/PNEUMONIA/person1946_bacteria_4874.jpeg
[ -f $IMG ] || IMG=data/samples/person1000_bacteria_2931.jpeg
node tests/browser.mjs $URL/ "$TOKEN" $IMG tests/artifacts > $T/browser.out 2>&1; rc=$?
cat $T/browser.out
n=$((n + $(grep -c '^ok' $T/browser.out))); fails=$((fails + $(grep -c '^FAIL' $T/browser.out)))
[ $rc -eq 0 ] || [ $fails -gt 0 ] || bad "browser.mjs exited $rc"
echo "screenshots: tests/artifacts/signin.png page.png page-tablet.png"
finish browser
