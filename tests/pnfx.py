"""pnfx.py: the writer of pneumo's test fixture files (format: tests/fixture.h): "PNFX",
version, count, then named little-endian float32 tensors, then "PNFE" and a CRC-32. Shared by
tests/gen_fixtures.py and tests/gen_augment.py (plain Python + numpy)."""
import os
import struct
import zlib

import numpy as np

FX_MAGIC = b"PNFX"
FX_END = b"PNFE"
FX_VERSION = 1


def write_fixture(path, tensors):
    """tensors: list of (name, array). Little-endian; see tests/fixture.h."""
    names = set()
    out = bytearray()
    out += FX_MAGIC + struct.pack("<III", FX_VERSION, len(tensors), 0)
    for name, a in tensors:
        a = np.asarray(a, dtype=np.float64)
        assert name not in names, name
        names.add(name)
        nb = name.encode("ascii")
        assert 1 <= len(nb) <= 255 and all(32 < c < 127 for c in nb), name
        assert a.ndim <= 8
        assert np.all(np.isfinite(a)), name
        out += struct.pack("<I", len(nb)) + nb + struct.pack("<I", a.ndim)
        out += struct.pack("<%dq" % a.ndim, *a.shape)
        out += a.astype("<f4").tobytes(order="C")
    crc = zlib.crc32(bytes(out)) & 0xFFFFFFFF
    out += FX_END + struct.pack("<I", crc)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(out)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(out)
