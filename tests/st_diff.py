#!/usr/bin/env python3
"""Compares the tensors of two safetensors files byte for byte (standard library only; the
metadata is not compared). Prints the differing or missing tensors and exits 1 when there are
any, 0 when every tensor is bit-identical. Usage: st_diff.py A B [--skip PREFIX ...]"""
import json
import struct
import sys


def tensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        out[name] = (t["dtype"], tuple(t["shape"]), data[base + b:base + e])
    return out


def main(argv):
    skip = []
    args = []
    i = 0
    while i < len(argv):
        if argv[i] == "--skip":
            skip.append(argv[i + 1])
            i += 2
        else:
            args.append(argv[i])
            i += 1
    a, b = tensors(args[0]), tensors(args[1])
    bad = 0
    for name in sorted(set(a) | set(b)):
        if any(name.startswith(s) for s in skip):
            continue
        if name not in a or name not in b:
            print(f"only in {'B' if name not in a else 'A'}: {name}")
            bad += 1
        elif a[name] != b[name]:
            print(f"differs: {name}")
            bad += 1
    print(f"st_diff: {len(a)} tensors, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
