#!/bin/sh
# Command-line tests of `pneumo augment`: explicit and random transforms written as PNGs of the
# right size, the contact sheet, the same seed giving the same bytes, and exit codes (0 ok,
# 1 failure such as a missing image, 2 usage error naming the flag). The pixels themselves are
# checked against Keras + scipy in tests/test_augment.c.
. tests/lib.sh
IMG=data/samples/person1000_bacteria_2931.jpeg
# check NAME CONDITION...: a plain test.
check() {
    name=$1; shift; n=$((n+1))
    if "$@"; then echo "ok   $name"; else fails=$((fails+1)); echo "FAIL: $name"; fi
}
# png_size FILE: "WIDTHxHEIGHT" from the IHDR chunk (bytes 16..23, big-endian).
png_size() {
    set -- $(od -An -tu1 -j16 -N8 "$1")
    [ $# -eq 8 ] && echo "$(( ($1<<24) + ($2<<16) + ($3<<8) + $4 ))x$(( ($5<<24) + ($6<<16) + ($7<<8) + $8 ))"
}
is_png() { [ "$(od -An -c -j1 -N3 "$1" 2>/dev/null | tr -d ' ')" = PNG ]; }

expect 0 "usage: pneumo augment" -- $P augment --help
# Explicit parameters: one PNG of --img-size, before rescaling.
expect 0 "theta 20.000 tx 5.500 ty -3.000 shear 4.000 zx 1.2000 zy 0.9000 flip 1 -> $T/e.png" -- \
    $P augment $IMG --theta 20 --tx 5.5 --ty -3 --shear 4 --zx 1.2 --zy 0.9 --flip 1 --fill-mode reflect --img-size 96 --out $T/e.png
check "explicit: a 96x96 PNG" is_png $T/e.png
check "explicit: size $(png_size $T/e.png)" [ "$(png_size $T/e.png)" = 96x96 ]
expect 0 "-> $T/id.png" -- $P augment $IMG --out $T/id.png --img-size 64 --resize nearest
check "identity: a 64x64 PNG" [ "$(png_size $T/id.png)" = 64x64 ]
expect 0 "-> $T/c.png" -- $P augment $IMG --theta 45 --fill-mode constant --cval 255 --img-size 64 --out $T/c.png
check "constant fill differs from nearest" sh -c "$P augment $IMG --theta 45 --img-size 64 --out $T/cn.png >/dev/null && ! cmp -s $T/c.png $T/cn.png"
# Random parameters from the training flags: -n 4 writes 4 files, and a contact sheet.
R="--rotation-range 20 --width-shift-range 0.1 --height-shift-range 0.1 --shear-range 10 --zoom-range 0.2 --horizontal-flip --img-size 64"
expect 0 "index 3: theta .* -> $T/r-3.png" -- $P augment $IMG $R --seed 7 -n 4 --out $T/r.png --sheet $T/sheet.png
check "-n 4 wrote r-0..r-3.png" sh -c "ls $T/r-*.png | wc -l | grep -qx 4 && test -f $T/r-0.png && test -f $T/r-3.png"
check "sheet: 2x2 tiles of 64 with 4-px gaps is 140x140 ($(png_size $T/sheet.png))" [ "$(png_size $T/sheet.png)" = 140x140 ]
check "random: tiles differ from each other" sh -c "! cmp -s $T/r-0.png $T/r-1.png"
# The same (seed, epoch, index) gives the same bytes; another seed does not.
mkdir -p $T/again $T/other
expect 0 "index 3:" -- $P augment $IMG $R --seed 7 --count 4 --out $T/again/r.png
check "same seed, same files" sh -c "for i in 0 1 2 3; do cmp $T/r-\$i.png $T/again/r-\$i.png || exit 1; done"
expect 0 "index 2:" -- $P augment $IMG $R --seed 7 --index 2 --n 1 --out $T/again/one.png
check "--index 2 alone equals the third of four" cmp $T/r-2.png $T/again/one-2.png
expect 0 "index 0:" -- $P augment $IMG $R --seed 8 -n 1 --out $T/other/r.png
check "another seed, another image" sh -c "! cmp -s $T/r-0.png $T/other/r-0.png"
expect 0 "index 0:" -- $P augment $IMG $R --seed 7 --epoch 1 -n 1 --out $T/other/e.png
check "another epoch, another image" sh -c "! cmp -s $T/r-0.png $T/other/e-0.png"
expect 0 "sheet: 1 image" -- $P augment $IMG --img-size 32 --sheet $T/one.png
check "sheet of one: 40x40" [ "$(png_size $T/one.png)" = 40x40 ]
# Usage errors: exit 2, naming the flag.
expect 2 '--theta expects a number in \[-360, 360\], got "abc"' -- $P augment $IMG --theta abc --out $T/x.png
expect 2 '--flip expects an integer in 0..1, got "2"' -- $P augment $IMG --flip 2 --out $T/x.png
expect 2 '--fill-mode expects nearest, constant, reflect or wrap, got "mirror"' -- $P augment $IMG --fill-mode mirror --out $T/x.png
expect 2 '--resize expects area, bilinear or nearest, got "cubic"' -- $P augment $IMG --resize cubic --out $T/x.png
expect 2 '--zoom-range expects a number in \[0, 0.99\], got "1.5"' -- $P augment $IMG --zoom-range 1.5 --out $T/x.png
expect 2 '--cval expects a number in \[0, 255\], got "300"' -- $P augment $IMG --cval 300 --out $T/x.png
expect 2 '--n expects an integer in 1..1000, got "0"' -- $P augment $IMG -n 0 --out $T/x.png
expect 2 '--img-size expects an integer in 32..1024, got "8"' -- $P augment $IMG --img-size 8 --out $T/x.png
expect 2 'unknown option "--bogus"' -- $P augment $IMG --bogus --out $T/x.png
expect 2 'unknown option "-x"' -- $P augment $IMG -x --out $T/x.png
expect 2 '--theta gives explicit parameters and --rotation-range asks for random ones' -- $P augment $IMG --theta 3 --rotation-range 10 --out $T/x.png
expect 2 '--out FILE.png is required' -- $P augment $IMG --theta 3
expect 2 'random transforms need --out' -- $P augment $IMG --rotation-range 10
expect 2 'expected one argument' -- $P augment --out $T/x.png
expect 2 'disagree' -- $P augment $IMG -n 2 --count 3 --out $T/x.png
expect 2 'over 67108864 pixels' -- $P augment $IMG -n 1000 --img-size 1024 --sheet $T/x.png
check "no file after usage errors" [ ! -e $T/x.png ]
# Failures: exit 1, naming the file.
expect 1 "missing.jpeg.*No such file" -- $P augment $T/missing.jpeg --out $T/x.png
printf 'not an image' > $T/bad.jpg
expect 1 "bad.jpg: expected a JPEG or PNG" -- $P augment $T/bad.jpg --out $T/x.png
expect 1 "cannot write $T/nodir/x.png: No such file" -- $P augment $IMG --out $T/nodir/x.png
finish augment.sh
