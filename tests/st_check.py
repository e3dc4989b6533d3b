#!/usr/bin/env python3
"""st_check.py: an independent checker of the safetensors format, Python standard library only.

It shares no code with libnet/safetensors.c: tests/test_safetensors.c writes files with the C
writer and runs this script on them. It validates FILE against the rules of the Python
`safetensors` package (8-byte little-endian header length N <= 100 MB, N bytes of UTF-8 JSON
starting with '{' and padded with spaces to a multiple of 8, tensors {dtype, shape,
data_offsets} that tile the data buffer exactly, "__metadata__" a map of strings to strings),
prints the header as JSON on stdout, and optionally checks names, shapes, dtypes and values.

usage: st_check.py --expect-invalid FILE...   (every FILE must be rejected; reasons on stdout)
       st_check.py FILE [--quiet] [--tol T] [--expect-count N] [--expect-meta KEY=VALUE]...
                        [--expect-order NAME,NAME,...]
                        [--expect-name NAME [--expect-dtype D] [--expect-shape 2,3]
                                            [--expect-first V] [--expect-values V,V,...]]...
--expect-dtype/-shape/-first/-values apply to the latest --expect-name. Values compare with
|got - want| <= T * max(1, |want|) (T defaults to 1e-6). Exit status: 0 valid and every
expectation met, 1 invalid file or unmet expectation (reason on stderr), 2 usage error.
"""
import json
import math
import struct
import sys

MAX_HEADER = 100_000_000
DTYPE_SIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}


class Invalid(Exception):
    pass


def _no_dups(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise Invalid("duplicate key %r in the header" % k)
        d[k] = v
    return d


def _no_constants(name):
    raise Invalid("non-standard JSON constant %s in the header" % name)


def _is_uint(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def parse(blob):
    """Validates a whole file's bytes. Returns (header_len, metadata, tensors, data) where
    tensors is a list of dicts in data order. Raises Invalid."""
    if len(blob) < 8:
        raise Invalid("%d bytes, too short for the header length" % len(blob))
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER:
        raise Invalid("header length %d above the %d limit" % (n, MAX_HEADER))
    if 8 + n > len(blob):
        raise Invalid("header length %d beyond the file (%d bytes)" % (n, len(blob)))
    raw = blob[8:8 + n]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid("header is not UTF-8: %s" % e)
    if not text.startswith("{"):
        raise Invalid("header does not start with '{'")
    if n % 8 != 0:
        raise Invalid("header length %d is not a multiple of 8" % n)
    stripped = text.rstrip(" ")
    if not stripped.endswith("}"):
        raise Invalid("header padding is not spaces after the JSON object")
    try:
        hdr = json.loads(text, object_pairs_hook=_no_dups, parse_constant=_no_constants)
    except ValueError as e:
        raise Invalid("header is not valid JSON: %s" % e)
    if not isinstance(hdr, dict):
        raise Invalid("header is not a JSON object")
    data = blob[8 + n:]
    meta = hdr.pop("__metadata__", None)
    if meta is not None:
        if not isinstance(meta, dict):
            raise Invalid("__metadata__ is not an object")
        for k, v in meta.items():
            if not isinstance(v, str):
                raise Invalid("__metadata__[%r] is not a string" % k)
    tensors = []
    for name, e in hdr.items():
        if not isinstance(e, dict):
            raise Invalid("entry %r is not an object" % name)
        if set(e.keys()) != {"dtype", "shape", "data_offsets"}:
            raise Invalid("entry %r has fields %s" % (name, sorted(e.keys())))
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dt not in DTYPE_SIZE:
            raise Invalid("tensor %r: unknown dtype %r" % (name, dt))
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise Invalid("tensor %r: bad shape %r" % (name, shape))
        if not isinstance(offs, list) or len(offs) != 2 or not all(_is_uint(o) for o in offs):
            raise Invalid("tensor %r: bad data_offsets %r" % (name, offs))
        b, end = offs
        numel = 1
        for d in shape:
            numel *= d
        if end < b or end - b != numel * DTYPE_SIZE[dt]:
            raise Invalid("tensor %r: shape %r of %s does not match data_offsets %r"
                          % (name, shape, dt, offs))
        tensors.append({"name": name, "dtype": dt, "shape": shape, "data_offsets": offs})
    tensors.sort(key=lambda t: (t["data_offsets"][0], t["data_offsets"][1]))
    pos = 0
    for t in tensors:
        b, end = t["data_offsets"]
        if b != pos:
            raise Invalid("tensor %r begins at %d, expected %d (%s)"
                          % (t["name"], b, pos, "overlap" if b < pos else "gap"))
        pos = end
    if pos != len(data):
        raise Invalid("tensors cover %d bytes but the data buffer holds %d" % (pos, len(data)))
    return n, (meta or {}), tensors, data


def values(t, data, count):
    """The first `count` elements of float tensor t, as Python floats."""
    b = t["data_offsets"][0]
    dt = t["dtype"]
    out = []
    for i in range(count):
        if dt == "F32":
            out.append(struct.unpack_from("<f", data, b + 4 * i)[0])
        elif dt == "F16":
            out.append(struct.unpack_from("<e", data, b + 2 * i)[0])
        elif dt == "BF16":
            (h,) = struct.unpack_from("<H", data, b + 2 * i)
            out.append(struct.unpack("<f", struct.pack("<I", h << 16))[0])
        elif dt == "F64":
            out.append(struct.unpack_from("<d", data, b + 8 * i)[0])
        else:
            raise Invalid("tensor %r: value checks need a float dtype, not %s" % (t["name"], dt))
    return out


def close(got, want, tol):
    if math.isnan(want):
        return math.isnan(got)
    if math.isinf(want):
        return got == want
    return abs(got - want) <= tol * max(1.0, abs(want))


def usage(msg):
    sys.stderr.write("st_check.py: %s\n" % msg)
    sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
    sys.exit(2)


def expect_invalid(paths):
    rc = 0
    for path in paths:
        try:
            with open(path, "rb") as fh:
                parse(fh.read())
        except OSError as ex:
            print("%s: cannot read: %s" % (path, ex.strerror))
            rc = 1
        except Invalid as ex:
            print("%s: invalid: %s" % (path, ex))
        else:
            sys.stderr.write("st_check: %s: accepted, but it should be invalid\n" % path)
            rc = 1
    return rc


def main(argv):
    if not argv:
        usage("no FILE")
    if argv[0] == "--expect-invalid":
        return expect_invalid(argv[1:])
    path, rest = argv[0], argv[1:]
    quiet, tol, count, order = False, 1e-6, None, None
    meta_want, expects = [], []
    i = 0
    try:
        while i < len(rest):
            a = rest[i]
            if a == "--quiet":
                quiet = True
                i += 1
                continue
            if i + 1 >= len(rest):
                usage("%s needs a value" % a)
            v = rest[i + 1]
            i += 2
            if a == "--tol":
                tol = float(v)
            elif a == "--expect-count":
                count = int(v)
            elif a == "--expect-order":
                order = v.split(",")
            elif a == "--expect-meta":
                if "=" not in v:
                    usage("--expect-meta wants KEY=VALUE")
                meta_want.append(tuple(v.split("=", 1)))
            elif a == "--expect-name":
                expects.append({"name": v})
            elif a in ("--expect-dtype", "--expect-shape", "--expect-first", "--expect-values"):
                if not expects:
                    usage("%s must follow --expect-name" % a)
                e = expects[-1]
                if a == "--expect-dtype":
                    e["dtype"] = v
                elif a == "--expect-shape":
                    e["shape"] = [int(x) for x in v.split(",")] if v else []
                elif a == "--expect-first":
                    e["values"] = [float(v)]
                else:
                    e["values"] = [float(x) for x in v.split(",")]
            else:
                usage("unknown option %s" % a)
    except ValueError as ex:
        usage("bad number: %s" % ex)

    try:
        with open(path, "rb") as fh:
            blob = fh.read()
    except OSError as ex:
        sys.stderr.write("st_check: %s: %s\n" % (path, ex.strerror))
        return 1
    try:
        n, meta, tensors, data = parse(blob)
    except Invalid as ex:
        sys.stderr.write("st_check: %s: invalid: %s\n" % (path, ex))
        return 1
    if not quiet:
        print(json.dumps({"file": path, "header_len": n, "metadata": meta, "tensors": tensors},
                         indent=1))

    problems = []
    by_name = {t["name"]: t for t in tensors}
    if count is not None and count != len(tensors):
        problems.append("expected %d tensors, found %d" % (count, len(tensors)))
    if order is not None and order != [t["name"] for t in tensors]:
        problems.append("tensor order %s, expected %s" % ([t["name"] for t in tensors], order))
    for k, v in meta_want:
        if meta.get(k) != v:
            problems.append("metadata %r is %r, expected %r" % (k, meta.get(k), v))
    for e in expects:
        t = by_name.get(e["name"])
        if t is None:
            problems.append("no tensor %r" % e["name"])
            continue
        if "dtype" in e and t["dtype"] != e["dtype"]:
            problems.append("%r has dtype %s, expected %s" % (e["name"], t["dtype"], e["dtype"]))
        if "shape" in e and t["shape"] != e["shape"]:
            problems.append("%r has shape %s, expected %s" % (e["name"], t["shape"], e["shape"]))
        if "values" in e:
            numel = 1
            for d in t["shape"]:
                numel *= d
            want = e["values"]
            if len(want) > numel:
                problems.append("%r has %d elements, %d expected values" % (e["name"], numel,
                                                                           len(want)))
                continue
            try:
                got = values(t, data, len(want))
            except Invalid as ex:
                problems.append(str(ex))
                continue
            for j, (g, w) in enumerate(zip(got, want)):
                if not close(g, w, tol):
                    problems.append("%r[%d] is %r, expected %r" % (e["name"], j, g, w))
    for p in problems:
        sys.stderr.write("st_check: %s: %s\n" % (path, p))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
