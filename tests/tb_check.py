#!/usr/bin/env python3
"""Independent reader of TensorBoard event files (standard library only): checks the TFRecord
framing (length, masked CRC32C of the length, data, masked CRC32C of the data), decodes the
Event / Summary / Value protocol buffers, and prints one line per scalar: `step tag value`.
Exits 1 on any framing or decoding error. Usage: tb_check.py EVENTFILE"""
import struct
import sys


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def fields(b):
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        elif wt == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError(f"wire type {wt}")
        yield f, v


def main(path):
    data = open(path, "rb").read()
    i = n = 0
    version = None
    while i < len(data):
        if i + 12 > len(data):
            raise ValueError("truncated header")
        hdr = data[i:i + 8]
        (length,) = struct.unpack("<Q", hdr)
        (c1,) = struct.unpack("<I", data[i + 8:i + 12])
        if c1 != masked(crc32c(hdr)):
            raise ValueError(f"length CRC mismatch at {i}")
        body = data[i + 12:i + 12 + length]
        (c2,) = struct.unpack("<I", data[i + 12 + length:i + 16 + length])
        if c2 != masked(crc32c(body)):
            raise ValueError(f"data CRC mismatch at {i}")
        i += 16 + length
        n += 1
        step, wall = 0, None
        for f, v in fields(body):
            if f == 1:
                (wall,) = struct.unpack("<d", v)
            elif f == 2:
                step = v
            elif f == 3:
                version = v.decode()
            elif f == 5:
                for sf, sv in fields(v):
                    if sf != 1:
                        continue
                    tag = val = None
                    for vf, vv in fields(sv):
                        if vf == 1:
                            tag = vv.decode()
                        elif vf == 2:
                            (val,) = struct.unpack("<f", vv)
                    print(f"{step} {tag} {val!r}")
        if wall is None or wall < 1e9:
            raise ValueError("missing or implausible wall_time")
    if version != "brain.Event:2":
        raise ValueError(f"file_version is {version!r}")
    print(f"records {n}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as e:  # one line, then fail
        print(f"tb_check: {e}", file=sys.stderr)
        sys.exit(1)
