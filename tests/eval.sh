#!/bin/sh
# `pneumo eval` end to end on a small class-folder data set (the shipped samples, copied under
# Kermany-like names) with a narrow network (--width-div 16, 64 px): the JSON fields and their
# consistency, the HTML report (self-contained: inline SVG, base64 PNG thumbnails that decode, no
# URLs, escaped file names, attribution, training curves from a run's log.csv), the atomic write,
# and exit codes 1 (unreadable model, data, log) and 2 (usage).
. tests/lib.sh
# 12 images per class: the three samples under distinct Kermany-style names.
D=$T/data
mkdir -p $D/NORMAL $D/PNEUMONIA
i=0
for k in 1 2 3 4; do
    for s in data/samples/*.jpeg; do
        i=$((i+1))
        cp "$s" $D/NORMAL/IM-$((1000+i))-0001.jpeg
        cp "$s" $D/PNEUMONIA/person$((100+i))_bacteria_$i.jpeg
    done
done
M=$T/m.st
$P init --out $M --img-size 64 --width-div 16 --seed 2 > /dev/null || bad "init"

# The table.
expect 0 "images +24: NORMAL 12, PNEUMONIA 12" -- $P eval --model $M --data $D --threads 1 --boot 100
expect 0 "ROC AUC .*bootstrap interval, 100 resamples" -- $P eval --model $M --data $D --threads 1 --boot 100
expect 0 "NORMAL +[0-9]+ \(TN\) +[0-9]+ \(FP\)" -- $P eval --model $M --data $D --threads 1 --boot 100

# JSON: fields present and consistent with each other and with the data.
$P eval --model $M --data $D --json --threads 1 --boot 200 --batch 5 --seed 3 > $T/e.json 2> $T/e.err \
    && ok "eval --json exits 0" || bad "eval --json: $(tail -n 2 $T/e.err)"
$P eval --model $M --data $D --json --threads 1 --boot 200 --batch 7 --seed 3 --loader-threads 3 > $T/e2.json 2> /dev/null
$P eval --model $M --data $D --json --threads 1 --boot 50 --threshold 0 > $T/t0.json 2> /dev/null
if command -v python3 > /dev/null; then
    python3 - "$T/e.json" "$T/e2.json" "$T/t0.json" > $T/py.txt 2>&1 <<'EOF'
import json, math, sys
e = json.load(open(sys.argv[1])); e2 = json.load(open(sys.argv[2])); t0 = json.load(open(sys.argv[3]))
def check(cond, what):
    if not cond:
        print("FAIL", what); sys.exit(1)
for k in ("model", "data", "n", "class_names", "class_counts", "threshold", "accuracy", "sensitivity",
          "specificity", "precision", "f1", "auc", "auc_ci", "confusion", "confusion_matrix", "roc",
          "pr", "mistakes", "model_meta", "average_precision", "loss", "skipped"):
    check(k in e, "missing field " + k)
c = e["confusion"]
check(e["n"] == 24, "n = %d, want 24" % e["n"])
check(c["tp"] + c["fp"] + c["tn"] + c["fn"] == e["n"], "tp+fp+tn+fn != n")
check(e["class_counts"] == [12, 12] and c["tp"] + c["fn"] == 12, "class counts")
check(e["class_names"] == ["NORMAL", "PNEUMONIA"], "class names")
check(e["confusion_matrix"] == [[c["tn"], c["fp"]], [c["fn"], c["tp"]]], "confusion matrix")
check(e["threshold"] == e["model_meta"]["threshold"], "the stored threshold is used")
check(abs(e["sensitivity"] - c["tp"] / 12) < 1e-6 and abs(e["specificity"] - c["tn"] / 12) < 1e-6, "sens/spec")
check(abs(e["accuracy"] - (c["tp"] + c["tn"]) / 24) < 1e-6, "accuracy")
ci = e["auc_ci"]
check(ci["resamples"] == 200 and ci["lo"] <= e["auc"] + 1e-9 <= ci["hi"] + 2e-9, "AUC inside its interval")
r = e["roc"]
check(len(r["threshold"]) == len(r["fpr"]) == len(r["tpr"]) >= 2, "roc arrays")
check(r["fpr"][0] == 0 and r["tpr"][0] == 0 and r["fpr"][-1] == 1 and r["tpr"][-1] == 1, "roc ends")
check(all(a > b for a, b in zip(r["threshold"], r["threshold"][1:])), "roc thresholds fall")
# Trapezoids under the ROC points give the exact (Mann-Whitney) AUC.
auc = sum((r["fpr"][i+1] - r["fpr"][i]) * (r["tpr"][i+1] + r["tpr"][i]) / 2 for i in range(len(r["fpr"]) - 1))
check(abs(auc - e["auc"]) < 1e-6, "ROC points integrate to the AUC (%g vs %g)" % (auc, e["auc"]))
p = e["pr"]
check(len(p["threshold"]) == len(p["precision"]) == len(p["recall"]) >= 1 and p["recall"][-1] == 1, "pr arrays")
# Batch size and loader threads change nothing.
check(e == e2, "results differ between --batch 5 and --batch 7 --loader-threads 3")
# --threshold 0: everything is positive.
tc = t0["confusion"]
check(t0["threshold"] == 0 and t0["threshold_source"] == "flag" and tc["tp"] == 12 and tc["fp"] == 12, "--threshold 0")
check(len(t0["mistakes"]["false_positives"]) == 6 and t0["mistakes"]["false_negatives"] == [], "mistakes")
print("json ok")
EOF
    [ $? -eq 0 ] && ok "JSON fields consistent (n, confusion, ROC, PR, CI, batch-independent)" || bad "JSON: $(cat $T/py.txt)"
else
    grep -q '"confusion":{"tp":' $T/e.json && ok "JSON has the confusion counts" || bad "JSON lacks confusion"
    echo "SKIP part: no python3 for the JSON consistency checks"
fi

# The HTML report: --threshold 0 makes every NORMAL image a false positive (3 thumbnails).
H=$T/report.html
expect 0 "report: .*report.html" -- $P eval --model $M --data $D --threads 1 --boot 50 --threshold 0 --mistakes 3 --report $H
grep -q "<svg" $H && ok "report has inline SVG" || bad "no <svg in the report"
[ "$(grep -o 'data:image/png;base64,' $H | wc -l)" -eq 3 ] && ok "3 thumbnails" \
    || bad "thumbnails: $(grep -o 'data:image/png;base64,' $H | wc -l), want 3"
grep -Eq "https?://" $H && bad "report refers to a URL: $(grep -Eo '.{20}https?://.{20}' $H | head -n 1)" || ok "no URLs"
grep -Eq "(src|href)=\"[^d#]" $H && bad "report loads something external" || ok "nothing external"
grep -q "doi:10.17632/rscbjbr9sj.2" $H && grep -q "CC BY 4.0" $H && ok "Kermany attribution" || bad "no attribution"
grep -qi "decision support, not a diagnosis" $H && ok "disclaimer" || bad "no disclaimer"
grep -qi "no training log given" $H && ok "says no training log" || bad "no 'no training log given'"
[ -e $H.tmp ] && bad "$H.tmp left behind" || ok "no temporary file left"
if command -v python3 > /dev/null; then
    python3 - $H > $T/png.txt 2>&1 <<'EOF'
import base64, re, struct, sys, zlib
h = open(sys.argv[1]).read()
for b in re.findall(r'data:image/png;base64,([A-Za-z0-9+/=]+)"', h):
    d = base64.b64decode(b, validate=True)
    assert d[:8] == b"\x89PNG\r\n\x1a\n", "signature"
    w, hh, depth, ctype = struct.unpack(">IIBB", d[16:26])
    assert max(w, hh) == 96 and depth == 8 and ctype in (0, 2), (w, hh, depth, ctype)
    idat, i = b"", 8
    while i < len(d):
        n, t = struct.unpack(">I4s", d[i:i+8])
        assert zlib.crc32(d[i+4:i+8+n]) == struct.unpack(">I", d[i+8+n:i+12+n])[0], "crc"
        if t == b"IDAT": idat += d[i+8:i+8+n]
        i += 12 + n
    assert t == b"IEND"
    assert len(zlib.decompress(idat)) == hh * (1 + w * (1 if ctype == 0 else 3)), "pixel data"
print("png ok")
EOF
    [ $? -eq 0 ] && ok "thumbnails are whole 96-px PNGs" || bad "thumbnail PNG: $(tail -n 3 $T/png.txt)"
fi

# Training curves from a run's log.csv (--run DIR or --csv FILE).
$P train --data $D --img-size 64 --width-div 16 --epochs 2 --batch 8 --val-split 0.25 --threads 1 --out $T/run > $T/train.txt 2>&1 \
    || bad "train: $(tail -n 2 $T/train.txt)"
expect 0 "report:" -- $P eval --model $T/run/best.safetensors --data $D --run $T/run --report $T/r2.html --threads 1 --boot 20
grep -q "Loss per epoch" $T/r2.html && grep -q "ROC AUC per epoch" $T/r2.html && grep -q ">val_loss<" $T/r2.html \
    && grep -q ">val_auc<" $T/r2.html && grep -q "2 epochs" $T/r2.html && ok "training curves (--run)" || bad "no training curves"
grep -qi "no training log given" $T/r2.html && bad "says no log with --run" || ok "log used"
expect 0 "report:" -- $P eval --model $T/run/best.safetensors --data $D --csv $T/run/log.csv --report $T/r3.html --threads 1 --boot 20
grep -q "Loss per epoch" $T/r3.html && ok "training curves (--csv)" || bad "no training curves with --csv"

# File names are escaped; an unreadable image is skipped, named, and counted.
printf 'not an image' > "$D/NORMAL/x<b>&\"y.jpeg"
expect 0 "skipped" -- $P eval --model $M --data $D --max-bad-frac 0.1 --threshold 0 --report $T/r4.html --threads 1 --boot 20
grep -q 'x&lt;b&gt;&amp;&quot;y.jpeg' $T/r4.html && ! grep -q 'x<b>' $T/r4.html && ok "file names escaped" || bad "file name not escaped"
expect 1 "cannot be read|could be read|bad|fraction|x<b>" -- $P eval --model $M --data $D --threads 1 --boot 0
rm -f "$D/NORMAL/x<b>&\"y.jpeg"

# A failed write leaves the previous report as it was.
echo old > $T/full.html
ln -s /dev/full $T/full.html.tmp
expect 1 "full.html.tmp.*No space left" -- $P eval --model $M --data $D --report $T/full.html --threads 1 --boot 0
[ "$(cat $T/full.html)" = old ] && ok "previous report intact" || bad "previous report changed"
[ -e $T/full.html.tmp ] && bad "temporary left behind after a failure" || ok "temporary removed"

# S3: the same images through the local S3 server of tests/s3.sh; thumbnails come back through S3.
if s3_start evalb; then
    if s3_seed $D s3://evalb/set/; then
        expect 0 '"n":24,' -- $P eval --model $M --data s3://evalb/set/ --json --threshold 0 --mistakes 2 --report $T/s3.html --threads 1 --boot 0
        [ "$(grep -o 'data:image/png;base64,' $T/s3.html | wc -l)" -eq 2 ] && grep -q 'title="s3://evalb/set/NORMAL/IM-' $T/s3.html \
            && ok "S3 thumbnails" || bad "S3 report: $(grep -o 'class="missing"[^<]*' $T/s3.html | head -n 1)"
        # pneumo train reads the same bucket, and a missing bucket is a clear error.
        expect 0 "best val_loss" -- $P train --data s3://evalb/set/ --img-size 64 --width-div 16 --epochs 1 --batch 8 --val-split 0.25 --threads 1 --out $T/s3run
        expect 1 "NoSuchBucket" -- $P train --data s3://no-such-bucket/set/ --img-size 64 --width-div 16 --epochs 1 --out $T/s3run2
    fi
    s3_stop
fi

# Class names: different names warn; another class count is an error.
mkdir -p $T/ab/a $T/ab/b $T/three/A $T/three/B $T/three/C
cp data/samples/IM-0115-0001.jpeg $T/ab/a/; cp data/samples/person1000_bacteria_2931.jpeg $T/ab/b/
for c in A B C; do cp data/samples/IM-0115-0001.jpeg $T/three/$c/; done
expect 0 "warning: the data's classes are a, b but the model's are NORMAL, PNEUMONIA" -- $P eval --model $M --data $T/ab --boot 0 --threads 1
expect 1 "expected 2 class folders.*found 3" -- $P eval --model $M --data $T/three --boot 0 --threads 1

# Errors: 1 for what cannot be read (naming it), 2 for usage.
expect 1 "missing.st" -- $P eval --model $T/missing.st --data $D
expect 1 "nodata" -- $P eval --model $M --data $T/nodata
echo "epoch;loss" > $T/bad.csv
expect 1 "bad.csv: not a training log" -- $P eval --model $M --data $D --csv $T/bad.csv
expect 1 "nothing/log.csv" -- $P eval --model $M --data $D --run $T/nothing
expect 1 "nodir/r.html.tmp" -- $P eval --model $M --data $D --report $T/nodir/r.html
expect 2 'unknown option "--bogus"' -- $P eval --model $M --data $D --bogus
expect 2 '--threshold expects a number in \[0, 1\], got "2"' -- $P eval --model $M --data $D --threshold 2
expect 2 "--data DIR\|s3://bucket/prefix/ is required" -- $P eval --model $M
expect 2 "give --csv or --run, not both" -- $P eval --model $M --data $D --csv a --run b
expect 2 '--boot expects an integer' -- $P eval --model $M --data $D --boot -1
expect 2 '--resize expects area, bilinear or nearest, got "cubic"' -- $P eval --model $M --data $D --resize cubic
expect 0 "usage: pneumo eval" -- $P eval --help
finish eval.sh
