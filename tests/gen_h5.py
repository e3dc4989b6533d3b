#!/usr/bin/python3
"""gen_h5.py: writes the Keras .h5 weight fixtures for tests/test_h5import.c.

Run with /usr/bin/python3 (it needs h5py and numpy):  /usr/bin/python3 tests/gen_h5.py

The files copy the layout of Keras's resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5
(Keras 2 `save_weights` format: root attributes layer_names, backend, keras_version; one group
per layer, in layer_names order, with attribute weight_names, fixed-length byte strings; an
empty float64 weight_names for weight-less layers) for a ResNet50 with every channel count
divided by 16 (nt_resnet_cfg.width_div = 16):

  keras_resnet50_w16_current.h5  current names (conv1_conv, conv2_block1_1_conv, ...), Keras 2
                                 weight names nested under the layer group
                                 (/conv1_conv/conv1_conv/kernel:0)
  keras_resnet50_w16_2017.h5     the 2017 keras-applications names and layer order (conv1,
                                 bn_conv1, res2a_branch2a, ..., branch2c before branch1), with
                                 Keras 1 flat weight names (/conv1/conv1_W:0, bn_conv1_running_std)

Both hold the same values. Each value encodes where it belongs: parameter r (0 kernel/gamma,
1 bias/beta, 2 moving_mean, 3 moving_variance) of the layer at index L of the current Keras
order (the model's layer index; 0 is input_1), element i in row-major HWIO order, holds
    L * 8 + r + (i % 8192) * 2**-13
which is exact in float32. tests/test_h5import.c checks every element against this formula.
"""
import os
import sys

import h5py
import numpy as np

WIDTH_DIV = 16
STAGES = [(2, 3, (64, 64, 256)), (3, 4, (128, 128, 512)), (4, 6, (256, 256, 1024)),
          (5, 3, (512, 512, 2048))]


def resnet50_layers():
    """The 175 layers of keras.applications.ResNet50(include_top=False) in Keras order, as
    (name, kind, params) with params a list of (role, shape) for weighted layers."""
    d = WIDTH_DIV
    L = [("input_1", None, []), ("conv1_pad", None, [])]

    def conv(name, r, cin, k):
        L.append((name, "conv", [("kernel", (r, r, cin, k)), ("bias", (k,))]))

    def bn(name, k):
        L.append((name, "bn", [(role, (k,)) for role in
                               ("gamma", "beta", "moving_mean", "moving_variance")]))

    conv("conv1_conv", 7, 3, 64 // d)
    bn("conv1_bn", 64 // d)
    L += [("conv1_relu", None, []), ("pool1_pad", None, []), ("pool1_pool", None, [])]
    cin = 64 // d
    for s, nblocks, filters in STAGES:
        f1, f2, f3 = (f // d for f in filters)
        for b in range(1, nblocks + 1):
            p = "conv%d_block%d" % (s, b)
            conv(p + "_1_conv", 1, cin, f1)
            bn(p + "_1_bn", f1)
            L.append((p + "_1_relu", None, []))
            conv(p + "_2_conv", 3, f1, f2)
            bn(p + "_2_bn", f2)
            L.append((p + "_2_relu", None, []))
            if b == 1:
                conv(p + "_0_conv", 1, cin, f3)
            conv(p + "_3_conv", 1, f2, f3)
            if b == 1:
                bn(p + "_0_bn", f3)
            bn(p + "_3_bn", f3)
            L += [(p + "_add", None, []), (p + "_out", None, [])]
            cin = f3
    assert len(L) == 175, len(L)
    return L


def values(layer_index, role_index, shape):
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.int64)
    v = layer_index * 8 + role_index + (i % 8192) * 2.0 ** -13
    return v.astype(np.float32).reshape(shape)


def old_name(name):
    """Current Keras name -> 2017 name (conv2_block1_1_conv -> res2a_branch2a)."""
    if name == "conv1_conv":
        return "conv1"
    if name == "conv1_bn":
        return "bn_conv1"
    stage, block, k, kind = name.split("_")  # "conv2", "block1", "1", "conv"
    s, blk = stage[4], int(block[5:])
    branch = {"0": "1", "1": "2a", "2": "2b", "3": "2c"}[k]
    prefix = "res" if kind == "conv" else "bn"
    return "%s%s%s_branch%s" % (prefix, s, "abcdef"[blk - 1], branch)


def old_order(layers):
    """The 2017 layer order and names: branch2c's conv and BN before the shortcut's, weight-less
    layers named as Keras 2.2 auto-named them."""
    out, act, add = [], [0], [0]

    def activation():
        act[0] += 1
        return ("activation_%d" % act[0], None, [])

    by_name = {n: (n, k, p) for n, k, p in layers}

    def w(name):
        _, k, p = by_name[name]
        return (old_name(name), k, p, name)

    out += [("input_1", None, []), ("conv1_pad", None, []), w("conv1_conv"), w("conv1_bn"),
            activation(), ("pool1_pad", None, []), ("max_pooling2d_1", None, [])]
    for s, nblocks, _ in STAGES:
        for b in range(1, nblocks + 1):
            p = "conv%d_block%d" % (s, b)
            out += [w(p + "_1_conv"), w(p + "_1_bn"), activation(), w(p + "_2_conv"),
                    w(p + "_2_bn"), activation(), w(p + "_3_conv"), w(p + "_3_bn")]
            if b == 1:
                out += [w(p + "_0_conv"), w(p + "_0_bn")]
            add[0] += 1
            out += [("add_%d" % add[0], None, []), activation()]
    assert len(out) == 175, len(out)
    return out


def keras1_weight(role):
    """Keras 1's suffix for a weight role (its BN called the moving variance running_std)."""
    return {"kernel": "W", "bias": "b", "gamma": "gamma", "beta": "beta",
            "moving_mean": "running_mean", "moving_variance": "running_std"}[role]


def write(path, layers, index_of, style):
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.asarray([e[0].encode("utf8") for e in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4" if style == "keras2" else b"1.2.2"
        for e in layers:
            name, kind, params = e[0], e[1], e[2]
            cur = e[3] if len(e) > 3 else name
            g = f.create_group(name)
            if not params:
                g.attrs["weight_names"] = np.asarray([])  # what Keras writes: float64, shape (0,)
                continue
            wn = []
            for r, (role, shape) in enumerate(params):
                if style == "keras2":
                    dname = "%s/%s:0" % (name, role)
                else:
                    dname = "%s_%s:0" % (name, keras1_weight(role))
                wn.append(dname.encode("utf8"))
                g.create_dataset(dname, data=values(index_of[cur], r, shape))
            g.attrs["weight_names"] = np.asarray(wn)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "fixtures")
    os.makedirs(out, exist_ok=True)
    layers = resnet50_layers()
    index_of = {n: i for i, (n, _, _) in enumerate(layers)}
    cur = os.path.join(out, "keras_resnet50_w16_current.h5")
    old = os.path.join(out, "keras_resnet50_w16_2017.h5")
    write(cur, layers, index_of, "keras2")
    write(old, old_order(layers), index_of, "keras1")
    for p in (cur, old):
        print("%s: %d bytes" % (p, os.path.getsize(p)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
