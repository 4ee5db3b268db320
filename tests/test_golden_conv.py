"""The golden model's conv and max-pool layers against plain loops over DESIGN.md's rules."""

import numpy as np
import pytest

from qnnfab import ir, random_net
from qnnfab.spec import golden


def loop_value(layer, code):
    """A weight code's value, from DESIGN.md's encodings (not from qnnfab.numerics)."""
    if layer.weight_kind == "binary":
        return 1 if code else -1
    if layer.weight_kind == "ternary":
        return {0: 0, 1: 1, 2: -1}[code]
    return int(layer.codebook[code])


def loop_kernel(layer, o, c):
    """Kernel (o, c) as values, read through the kernel codebook when there is one."""
    kc = layer.kernel_codebook
    k = layer.kernel_size
    if kc is None:
        return [[loop_value(layer, int(layer.weights[o, c, y, x])) for x in range(k)]
                for y in range(k)]
    s = 1 if kc.sign is None else int(kc.sign[o, c])
    rep = kc.kernels[int(kc.index[o, c])]
    return [[s * loop_value(layer, int(rep[y, x])) for x in range(k)] for y in range(k)]


def loop_conv(layer, codes):
    """Codes out of one conv layer for one image (flat (y, x, c) lists)."""
    h, w, cin = layer.in_shape
    k, p = layer.kernel_size, layer.padding
    kernels = {(o, c): loop_kernel(layer, o, c)
               for o in range(layer.out_channels) for c in range(cin)}

    def val(y, x, c):
        code = codes[(y * w + x) * cin + c] if 0 <= y < h and 0 <= x < w else 0
        return 2 * code - 1 if layer.in_bits == 1 else code

    out = []
    for y in range(layer.out_height):
        for x in range(layer.out_width):
            for o in range(layer.out_channels):
                acc = sum(kernels[o, c][ky][kx] * val(y + ky - p, x + kx - p, c)
                          for c in range(cin) for ky in range(k) for kx in range(k))
                s = int(layer.threshold_sign[o])
                out.append(sum(s * acc >= int(t) for t in layer.thresholds[o]))
    return out


def loop_pool(layer, codes):
    h, w, c = layer.in_shape
    s = layer.size
    return [max(codes[((y * s + dy) * w + x * s + dx) * c + ch]
                for dy in range(s) for dx in range(s))
            for y in range(h // s) for x in range(w // s) for ch in range(c)]


def loop_forward(net, x):
    codes = [int(v) for v in x]
    for layer in net.layers:
        if isinstance(layer, ir.ConvLayer):
            codes = loop_conv(layer, codes)
        elif isinstance(layer, ir.PoolLayer):
            codes = loop_pool(layer, codes)
        else:
            vals = [2 * c - 1 if layer.in_bits == 1 else c for c in codes]
            accs = [sum(loop_value(layer, int(layer.weights[o, i])) * vals[i]
                        for i in range(layer.in_features)) for o in range(layer.out_features)]
            if layer.is_output:
                return accs
            codes = [sum(int(layer.threshold_sign[o]) * accs[o] >= int(t)
                         for t in layer.thresholds[o]) for o in range(layer.out_features)]


CASES = [
    dict(height=6, width=5, channels=[1, 3], input_bits=5, pool=(), padding=1),
    dict(height=6, width=6, channels=[2, 4, 3], input_bits=1, hidden_bits=1, pool=(1,),
         weight_kind="binary"),  # 1-bit inputs: padding is code 0, value -1
    dict(height=7, width=6, channels=[3, 2], input_bits=2, kernel_size=5, padding=2,
         pool=(), dense=(5,)),
    dict(height=5, width=7, channels=[2, 3], input_bits=3, kernel_size=3, padding=0),
    dict(height=4, width=4, channels=[2, 4], input_bits=2, kernel_size=1, padding=0, pool=(0,)),
    dict(height=6, width=6, channels=[2, 3, 4], input_bits=2, pool=(0,), kernels=3, sign=True),
    dict(height=4, width=6, channels=[2, 3], input_bits=4, weight_kind="codebook",
         codebook=np.array([-6, -2, 0, 3, 5, 1, -1, 7]), kernels=4),
    dict(height=4, width=4, channels=[2, 3], input_bits=2, weight_kind="codebook",
         codebook=np.array([-3, -1, 1, 3]), kernels=4, sign=True),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_golden_cnn_matches_loops(seed, case):
    rng = np.random.default_rng(seed)
    net = random_net.random_cnn(rng, **CASES[case])
    xs = random_net.random_inputs(rng, net, 4)
    trace = golden.forward(net, xs)
    for k, x in enumerate(xs):
        assert list(trace.scores[k]) == loop_forward(net, x), f"case {case} seed {seed} vector {k}"


def test_trace_has_one_entry_per_layer_and_none_for_pools():
    rng = np.random.default_rng(0)
    net = random_net.random_cnn(rng, height=4, width=4, channels=[1, 2], pool=(0,))
    trace = golden.forward(net, random_net.random_inputs(rng, net, 3))
    assert [a is None for a in trace.accs] == [False, True, False]
    assert [a.shape for a in trace.acts] == [(3, 16), (3, 32), (3, 8)]


def test_kernel_sign_negates_the_representative():
    rng = np.random.default_rng(3)
    layer = random_net.random_conv(rng, in_channels=2, out_channels=3, height=4, width=4,
                                   in_bits=2, weight_kind="ternary", kernels=2, sign=True)
    kc = layer.kernel_codebook
    for o in range(3):
        for c in range(2):
            rep = np.array([0, 1, -1])[kc.kernels[kc.index[o, c]]]
            got = np.array([0, 1, -1])[layer.weights[o, c]]
            assert np.array_equal(got, kc.sign[o, c] * rep)
