"""ConvUnit (sliding window + MVU) alone against the golden model's conv layer: random shapes,
kernel sizes, paddings, weight kinds, kernel codebooks and foldings; pixel streams in and out
with random stalls."""

import numpy as np
import pytest

from qnnfab import random_net
from qnnfab.spec import golden
from qnnfab.rtl.conv import ConvUnit
from qnnfab.rtl.folding import simd_choices
from qnnfab.sim.stream_io import StreamSink, StreamSource, chance, run_streams

CASES = [
    # h, w, cin, cout, k, pad, in_bits, out_bits, kind, kernels, sign
    (5, 6, 2, 4, 3, 1, 2, 2, "ternary", None, False),
    (6, 4, 1, 3, 3, 0, 5, 1, "binary", None, False),
    (4, 4, 3, 2, 1, 0, 1, 1, "binary", None, False),
    (7, 5, 2, 2, 5, 2, 3, 2, "ternary", None, False),
    (5, 5, 2, 4, 3, 1, 2, 3, "ternary", 3, True),
    (4, 6, 2, 2, 3, 1, 1, 2, "codebook", 4, True),
]


def _drive(dut, images, layer, rng):
    """Feed the images' pixels with random gaps; take output pixels with random stalls."""
    h, w, c = layer.in_shape
    words = [sum(int(v) << (j * layer.in_bits) for j, v in enumerate(p))
             for p in images.reshape(-1, c)]
    source = StreamSource(dut.i, words, raw=True, idle=chance(0.3, rng))
    sink = StreamSink(dut.o, len(images) * layer.positions, raw=True, ready=chance(0.7, rng))
    run_streams(dut, [source], [sink])
    mask = (1 << layer.out_bits) - 1
    got = [[(value >> (j * layer.out_bits)) & mask for j in range(layer.out_channels)]
           for value in sink.payloads]
    return np.array(got).reshape(len(images), -1)


@pytest.mark.parametrize("case", CASES)
def test_conv_unit_matches_golden(case):
    h, w, cin, cout, k, pad, in_bits, out_bits, kind, kernels, sign = case
    rng = np.random.default_rng(sum(case[:8]))
    layer = random_net.random_conv(
        rng, in_channels=cin, out_channels=cout, height=h, width=w, in_bits=in_bits,
        out_bits=out_bits, kernel_size=k, padding=pad, weight_kind=kind,
        codebook=np.array([-3, -1, 1, 3]) if kind == "codebook" else None, kernels=kernels,
        sign=sign)
    pe = int(rng.choice([d for d in range(1, cout + 1) if cout % d == 0]))
    simd = int(rng.choice(simd_choices(layer)))
    images = rng.integers(0, 1 << in_bits, size=(3, h * w * cin))
    got = _drive(ConvUnit(layer, (pe, simd)), images, layer, rng)
    _, want = golden.layer_forward(layer, images)
    for b, j in zip(*np.nonzero(got != want)):
        y, x, o = np.unravel_index(j, layer.out_shape)
        raise AssertionError(f"{case} folding {pe}:{simd}: image {b} pixel ({y}, {x}) channel "
                             f"{o}: expected {want[b, j]}, got {got[b, j]}")
